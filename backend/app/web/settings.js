// Settings (the API key, preferences) and the server's health.

import { language, t } from "./i18n.js";
import { $, KEY_STORAGE, PREFS_STORAGE, state } from "./state.js";
import { apiKey } from "./server.js";
import { hideNotice, showNotice } from "./notices.js";
import { loadConversations } from "./conversations.js";
import { loadVoices } from "./voices.js";

export function askForKey(reason) {
  const dialog = $("settings");
  $("settings-reason").textContent = reason ?? "";
  $("settings-reason").hidden = !reason;
  $("api-key").value = apiKey();
  if (!dialog.open) dialog.showModal();
}

export function setUpSettings() {
  const dialog = $("settings");
  $("open-settings").addEventListener("click", () => askForKey());
  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "save") return;
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    hideNotice();
    loadData();
  });
}

export function savePrefs() {
  localStorage.setItem(PREFS_STORAGE, JSON.stringify({ mode: state.mode, voice: state.voice }));
}

export function loadPrefs() {
  try {
    const prefs = JSON.parse(localStorage.getItem(PREFS_STORAGE) || "{}");
    if (prefs.mode === "handsfree") {
      document.querySelector('input[name="mode"][value="handsfree"]').checked = true;
      state.mode = "handsfree";
    }
    if (typeof prefs.voice === "string") state.voice = prefs.voice;
  } catch {
    // a damaged entry: the defaults
  }
}

let healthTimer = 0;

export async function checkHealth() {
  clearTimeout(healthTimer);
  const pill = $("server-status");
  let health;
  try {
    const response = await fetch("/health", { cache: "no-store" });
    health = await response.json();
  } catch {
    pill.dataset.state = "down";
    pill.textContent = t("Offline");
    healthTimer = setTimeout(checkHealth, 5000);
    return;
  }
  const was = pill.dataset.state;
  pill.dataset.state = health.status;
  if (health.status === "ok") {
    if (was === "degraded") hideNotice(); // the database, say, is back
    pill.textContent = t("Ready");
    pill.title = Object.entries(health.modules)
      .map(([name, module]) => `${name}: ${module.model ?? "?"} (${module.device ?? "?"})`)
      .join("\n");
    if (was !== "ok") loadData();
  } else if (health.status === "loading") {
    pill.textContent = t("Loading models…");
    healthTimer = setTimeout(checkHealth, 2000);
  } else {
    pill.textContent = t("Degraded");
    // Asked again: a database that went away comes back by itself.
    healthTimer = setTimeout(checkHealth, 5000);
    if (was === "degraded") return; // said already (and perhaps dismissed)
    const storage = health.modules?.storage;
    const [what, detail] =
      storage && !storage.ready
        ? ["The server cannot keep conversations right now: {error}.", storage.error]
        : ["The server could not load its models: {error}.", health.error];
    // The server's words are English: a page in another language says where to look, and keeps
    // them as the notice's detail.
    const english = language() === "en";
    showNotice(t(what, { error: (english && detail) || t("see its log") }), "error", english ? "" : (detail ?? ""));
  }
}

export function loadData() {
  loadVoices();
  loadConversations(false);
}
