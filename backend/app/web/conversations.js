// Conversations: the sidebar list, opening, starting and deleting one.

import { t } from "./i18n.js";
import { $, PAGE_SIZE, state } from "./state.js";
import { api } from "./server.js";
import { explain, hideNotice, showError, showNotice } from "./notices.js";
import { clearMessages, MessageView } from "./transcript.js";
import { cancelTurn } from "./turns.js";
import { live } from "./hands-free.js";

export function setConversation(id, title) {
  if (!id) return;
  const changed = id !== state.conversationId;
  state.conversationId = id;
  if (title !== undefined) $("conversation-title").textContent = title || t("Untitled conversation");
  for (const button of document.querySelectorAll(".conversation-list .open")) {
    button.setAttribute("aria-current", String(button.dataset.id === id));
  }
  if (changed) refreshConversations();
}

export function newConversation() {
  if (live.ws) live.stop();
  cancelTurn();
  state.conversationId = null;
  clearMessages();
  $("conversation-title").textContent = t("New conversation");
  for (const button of document.querySelectorAll(".conversation-list .open")) {
    button.setAttribute("aria-current", "false");
  }
  closeSidebar();
  $("talk").focus();
}

export function describeWhen(seconds) {
  const date = new Date(seconds * 1000);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

let refreshTimer = 0;

export function refreshConversations() {
  // Several events may ask at once (a new id, a finished turn): one request will do.
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => loadConversations(false), 150);
}

export async function loadConversations(more) {
  const offset = more ? state.listOffset : 0;
  let page;
  try {
    page = await api(`/conversations?limit=${PAGE_SIZE}&offset=${offset}`);
  } catch (error) {
    if (error.status === 404) $("conversations").hidden = true; // a server without stored conversations
    return;
  }
  const list = $("conversation-list");
  if (!more) list.replaceChildren();
  for (const conversation of page.conversations) {
    const item = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.dataset.id = conversation.id;
    open.setAttribute("aria-current", String(conversation.id === state.conversationId));
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = conversation.title || t("Untitled conversation");
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = `${describeWhen(conversation.updated_at)} · ${t("{count} messages", { count: conversation.turn_count })}`;
    open.append(title, when);
    open.addEventListener("click", () => openConversation(conversation.id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", t("Delete conversation: {title}", { title: title.textContent }));
    remove.addEventListener("click", () => deleteConversation(conversation.id, title.textContent));
    item.append(open, remove);
    list.append(item);
    if (conversation.id === state.conversationId) {
      $("conversation-title").textContent = title.textContent;
    }
  }
  state.listOffset = offset + page.conversations.length;
  $("more-conversations").hidden = state.listOffset >= page.total;
  $("conversations-empty").hidden = page.total > 0;
}

export async function openConversation(id) {
  if (live.ws) live.stop();
  cancelTurn();
  hideNotice();
  let detail;
  try {
    detail = await api(`/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    showNotice(error.status === 404 ? t("That conversation no longer exists.") : explain(error));
    refreshConversations();
    return;
  }
  clearMessages();
  for (const turn of detail.turns) {
    const view = new MessageView(turn.role, turn.text);
    if (turn.role === "assistant") {
      view.setTools(turn.tools);
      view.setTimings(turn.timings);
      view.setAudio(turn.audio_url);
      if (turn.interrupted) view.markInterrupted();
    }
  }
  setConversation(detail.id, detail.title);
  closeSidebar();
}

export async function deleteConversation(id, title) {
  if (!window.confirm(t('Delete the conversation "{title}" and its audio?', { title }))) return;
  try {
    await api(`/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (error) {
    if (error.status !== 404) {
      showError(error);
      return;
    }
  }
  if (id === state.conversationId) newConversation();
  loadConversations(false);
}

export function closeSidebar() {
  $("sidebar").classList.remove("open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}
