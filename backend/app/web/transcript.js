// The transcript: one MessageView per turn, with its timings, replay and retry buttons.

import { t } from "./i18n.js";
import { $, TIMING_LABELS } from "./state.js";
import { playUrl } from "./playback.js";
import { SpokenWords } from "./captions.js";

export function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export class MessageView {
  constructor(role, text = "", { pending = false } = {}) {
    const node = $("message-template").content.firstElementChild.cloneNode(true);
    node.classList.add(role);
    node.querySelector(".who").textContent = t(role === "user" ? "You" : "Assistant");
    this.el = node;
    this.textEl = node.querySelector(".text");
    this.metaEl = node.querySelector(".meta");
    this.played = 0;
    this.text = text;
    this.pending = pending;
    $("messages").append(node);
    $("empty-chat").hidden = true;
    this.scroll();
  }

  get text() {
    return this.textEl.textContent;
  }

  set text(value) {
    this.textEl.textContent = value;
    this.scroll();
  }

  set pending(value) {
    this.el.classList.toggle("pending", value);
    this.el.setAttribute("aria-busy", String(value));
  }

  append(delta) {
    this.text += delta;
  }

  scroll() {
    const chat = $("main");
    chat.scrollTop = chat.scrollHeight;
  }

  note(text) {
    const span = document.createElement("span");
    span.textContent = text;
    this.metaEl.append(span);
    return span;
  }

  addPlayed(seconds) {
    this.played += seconds;
    this.el.dataset.playedSeconds = this.played.toFixed(2);
    if (!this.playedEl) this.playedEl = this.note("");
    this.playedEl.className = "played";
    this.playedEl.textContent = t("▶ {seconds} s played", { seconds: this.played.toFixed(1) });
  }

  setAudio(url) {
    if (!url || this.el.querySelector(".replay")) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "replay";
    button.textContent = t("Play again");
    button.setAttribute("aria-label", t("Play this reply again"));
    button.addEventListener("click", () => playUrl(url, null));
    this.metaEl.prepend(button);
  }

  setTimings(timings) {
    if (!timings || !Object.keys(timings).length) return;
    this.timings = timings;
    this.el.querySelector(".timings")?.remove();
    const list = document.createElement("ul");
    list.className = "timings";
    list.setAttribute("aria-label", t("Timings"));
    for (const [key, label] of TIMING_LABELS) {
      if (timings[key] === undefined) continue;
      const item = document.createElement("li");
      item.dataset.key = key;
      item.textContent = `${t(label)} ${formatMs(timings[key])}`;
      list.append(item);
    }
    this.el.append(list);
    this.scroll();
  }

  // The tools the reply called on the server (MCP): each call, its arguments and what came back.
  setTools(tools) {
    if (!tools || !tools.length) return;
    this.el.querySelector(".tools")?.remove();
    const list = document.createElement("ul");
    list.className = "tools";
    list.setAttribute("aria-label", t("Tools used"));
    for (const step of tools) {
      const item = document.createElement("li");
      item.classList.toggle("failed", Boolean(step.error));
      const call = document.createElement("code");
      call.textContent = `${step.name}(${step.arguments})`;
      const result = document.createElement("span");
      result.className = "result";
      const text = String(step.result ?? "");
      result.textContent = `→ ${text.length > 200 ? `${text.slice(0, 200)}…` : text}`;
      item.append(call, " ", result);
      if (step.error) item.append(" ", t("(failed)"));
      list.append(item);
    }
    this.textEl.before(list);
    this.scroll();
  }

  // The reply's words, lit as they are heard; `now` tells the time on the clock audio is anchored to.
  spokenWords(now) {
    if (!this.wordsView) {
      this.wordsView = new SpokenWords(this.textEl.parentNode, now);
      this.textEl.after(this.wordsView.el);
    }
    return this.wordsView;
  }

  markInterrupted(said) {
    if (this.el.classList.contains("interrupted")) return;
    this.pending = false;
    this.wordsView?.stopAt(said);
    this.el.classList.add("interrupted");
    if (said !== undefined) this.text = said || "…";
    this.note(t("interrupted"));
  }

  fail(message) {
    this.pending = false;
    this.el.classList.add("error");
    if (!this.text) this.text = message;
  }

  // A turn that failed keeps what the user said: one press sends it again.
  offerRetry(send) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "retry";
    button.textContent = t("Send again");
    button.addEventListener("click", () => {
      this.el.remove();
      send();
    });
    this.metaEl.append(button);
  }
}

export function clearMessages() {
  $("messages").replaceChildren();
  $("empty-chat").hidden = false;
}
