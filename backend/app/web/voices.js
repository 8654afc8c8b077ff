// Voices: the picker, uploads and deletion.

import { t } from "./i18n.js";
import { $, state } from "./state.js";
import { api } from "./server.js";
import { explain, showError } from "./notices.js";
import { savePrefs } from "./settings.js";

export async function loadVoices(select) {
  let voices;
  let info;
  try {
    [voices, info] = await Promise.all([api("/voices"), api("/speaker_info")]);
  } catch (error) {
    if (error.status !== 401) showError(error);
    return;
  }
  const picker = $("voice-select");
  const wanted = select ?? state.voice;
  picker.replaceChildren(new Option(voices.default_voice ? t("Default ({voice})", { voice: voices.default_voice }) : t("Default"), ""));
  for (const voice of voices.voices) {
    const details = [voice.language, voice.gender].filter(Boolean).join(", ");
    const option = new Option(details ? `${voice.name} (${details})` : voice.name, voice.name);
    option.dataset.deletable = String(voice.deletable);
    picker.append(option);
  }
  picker.value = voices.voices.some((voice) => voice.name === wanted) ? wanted : "";
  state.voice = picker.value;
  updateVoiceControls();
  const note = $("voice-note");
  note.hidden = info.supports_cloning;
  note.textContent =
    t(
      "This server's speech engine has one built-in voice, so every reply sounds the same; library voices " +
        "are used when the server runs a voice-cloning engine (VibeVoice).",
    );
}

export function updateVoiceControls() {
  const option = $("voice-select").selectedOptions[0];
  $("delete-voice").hidden = !(option && option.dataset.deletable === "true");
}

export async function uploadVoice(event) {
  event.preventDefault();
  const form = event.target;
  const status = $("voice-form-status");
  status.textContent = t("Uploading…");
  status.classList.remove("error-text");
  try {
    const voice = await api("/voices", { method: "POST", form: new FormData(form) });
    form.reset();
    await loadVoices(voice.name);
    savePrefs();
    // Said last, once the new voice is listed and picked.
    status.textContent = t("Added {name} ({seconds} s).", { name: voice.name, seconds: voice.duration?.toFixed(1) ?? "?" });
  } catch (error) {
    status.textContent = explain(error);
  }
}

export async function deleteVoice() {
  const name = $("voice-select").value;
  if (!name || !window.confirm(t("Delete the voice {name}?", { name }))) return;
  try {
    await api(`/voices/${encodeURIComponent(name)}`, { method: "DELETE" });
  } catch (error) {
    showError(error);
  }
  await loadVoices("");
  savePrefs();
}
