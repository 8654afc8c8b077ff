// The talk button, the mode and the keyboard.

import { t } from "./i18n.js";
import { $, state } from "./state.js";
import { setActivity } from "./notices.js";
import { updatePlaybackControls } from "./playback.js";
import { ptt } from "./push-to-talk.js";
import { cancelTurn } from "./turns.js";
import { live } from "./hands-free.js";
import { closeSidebar } from "./conversations.js";
import { savePrefs } from "./settings.js";

export function setTalkState(talkState, label) {
  const button = $("talk");
  button.dataset.state = talkState;
  const idle = t(state.mode === "ptt" ? "Hold to talk" : "Start");
  button.querySelector(".talk-label").textContent = label ?? idle;
  button.setAttribute("aria-pressed", String(talkState === "recording" || talkState === "listening"));
}

export function setMode(mode) {
  if (live.ws) live.stop();
  state.mode = mode;
  savePrefs();
  setTalkState("idle");
  showTalkHint();
}

// The mode's hint, and the idle button's label, in the page's language.
export function showTalkHint() {
  $("talk-hint").textContent = t(
    state.mode === "ptt"
      ? "Hold the button or the space bar while you speak. Enter starts and stops too."
      : "Start, then just talk; pause to let it answer, talk over it to interrupt. Space or Enter starts and stops.",
  );
  if ($("talk").dataset.state === "idle") setTalkState("idle");
}

export function toggleHandsFree() {
  if (live.starting) return;
  if (live.ws) live.stop();
  else live.start();
}

export function isTyping(target) {
  return target instanceof HTMLElement && target !== $("talk") && target.closest("input, select, textarea, button, summary, dialog, a");
}

let spaceHeld = false;

let keyboardClickGuard = 0;

export function setUpTalkControls() {
  const talk = $("talk");
  talk.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    if (state.mode !== "ptt") return;
    talk.setPointerCapture(event.pointerId);
    ptt.press();
  });
  const up = () => state.mode === "ptt" && ptt.release();
  talk.addEventListener("pointerup", up);
  talk.addEventListener("pointercancel", up);
  talk.addEventListener("contextmenu", (event) => event.preventDefault());
  talk.addEventListener("click", (event) => {
    if (state.mode === "handsfree") {
      if (performance.now() - keyboardClickGuard > 100) toggleHandsFree();
      return;
    }
    // Enter (a click with no pointer) starts and stops a recording, for those who cannot hold a key.
    if (event.detail === 0 && performance.now() - keyboardClickGuard > 100) {
      if (ptt.pressed) ptt.release();
      else ptt.press();
    }
  });

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("settings").open) {
      if ($("sidebar").classList.contains("open")) {
        closeSidebar();
        $("toggle-sidebar").focus();
      } else {
        stopSpeaking();
      }
      return;
    }
    if (event.code !== "Space" || isTyping(event.target)) return;
    event.preventDefault();
    if (event.repeat || spaceHeld) return;
    spaceHeld = true;
    if (state.mode === "ptt") ptt.press();
    else toggleHandsFree();
  });
  document.addEventListener("keyup", (event) => {
    if (event.code !== "Space" || !spaceHeld) return;
    event.preventDefault();
    spaceHeld = false;
    keyboardClickGuard = performance.now();
    if (state.mode === "ptt") ptt.release();
  });
  window.addEventListener("blur", () => {
    spaceHeld = false;
    if (ptt.pressed) ptt.release();
  });

  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => radio.checked && setMode(radio.value));
  }
  $("stop-audio").addEventListener("click", stopSpeaking);
}

export function stopSpeaking() {
  if (live.ws) live.interrupt();
  else cancelTurn();
  setActivity("");
  updatePlaybackControls();
}
