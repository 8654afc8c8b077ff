// The voice chat page. Push to talk records a clip (MediaRecorder) and sends it to POST /conversation,
// reading the answer as Server-Sent Events; hands-free streams 16-bit PCM over /ws/conversation,
// where the server detects turns and barge-in. Reply audio is played through Web Audio as it comes.
// Each part of the page is a module of its own; this one wires them up at start-up.

import { $, state } from "./state.js";
import { LANGUAGES, language, setLanguage, t, translatePage } from "./i18n.js";
import { hideNotice } from "./notices.js";
import { typedTurn } from "./turns.js";
import { setMode, setUpTalkControls, showTalkHint } from "./controls.js";
import { loadConversations, newConversation } from "./conversations.js";
import { deleteVoice, loadVoices, updateVoiceControls, uploadVoice } from "./voices.js";
import { checkHealth, loadPrefs, savePrefs, setUpSettings } from "./settings.js";

function setUpLanguage() {
  const picker = $("ui-language");
  for (const [code, name] of Object.entries(LANGUAGES)) picker.append(new Option(name, code));
  picker.value = language();
  picker.addEventListener("change", () => {
    setLanguage(picker.value);
    showTalkHint();
    if (!state.conversationId) $("conversation-title").textContent = t("New conversation");
    loadVoices(state.voice);
    checkHealth();
  });
}

function init() {
  translatePage();
  $("conversation-title").textContent = t("New conversation");
  setUpLanguage();
  loadPrefs();
  setUpTalkControls();
  setUpSettings();
  setMode(state.mode);
  $("notice-close").addEventListener("click", hideNotice);
  $("new-conversation").addEventListener("click", newConversation);
  $("more-conversations").addEventListener("click", () => loadConversations(true));
  $("voice-select").addEventListener("change", (event) => {
    state.voice = event.target.value;
    updateVoiceControls();
    savePrefs();
  });
  $("delete-voice").addEventListener("click", deleteVoice);
  $("voice-form").addEventListener("submit", uploadVoice);
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("text-input");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    typedTurn(text);
  });
  $("toggle-sidebar").addEventListener("click", () => {
    const open = $("sidebar").classList.toggle("open");
    $("toggle-sidebar").setAttribute("aria-expanded", String(open));
    if (open) $("new-conversation").focus();
  });
  checkHealth();
}

init();
