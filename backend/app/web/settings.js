// Settings (the API key, preferences) and the server's health.

import { t } from "./i18n.js";
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
  const wasReady = pill.dataset.state === "ok";
  pill.dataset.state = health.status;
  if (health.status === "ok") {
    pill.textContent = t("Ready");
    pill.title = Object.entries(health.modules)
      .map(([name, module]) => `${name}: ${module.model ?? "?"} (${module.device ?? "?"})`)
      .join("\n");
    if (!wasReady) loadData();
  } else if (health.status === "loading") {
    pill.textContent = t("Loading models…");
    healthTimer = setTimeout(checkHealth, 2000);
  } else {
    pill.textContent = t("Degraded");
    showNotice(t("The server could not load its models: {error}.", { error: health.error ?? t("see its log") }));
  }
}

export function loadData() {
  loadVoices();
  loadConversations(false);
}
