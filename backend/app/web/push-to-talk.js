// Push to talk: record while held, then one streamed turn over POST /conversation.

import { t } from "./i18n.js";
import { MIN_RECORDING_MS, RECORDING_TYPES, state } from "./state.js";
import { api, ApiError, base64ToBuffer, readEvents } from "./server.js";
import { detailOf, explain, hideNotice, setActivity, showError, showNotice } from "./notices.js";
import { player } from "./playback.js";
import { MessageView } from "./transcript.js";
import { meter, microphone, releaseMicrophoneSoon } from "./microphone.js";
import { beginTurn, cancelTurn, finishTurn } from "./turns.js";
import { setTalkState } from "./controls.js";
import { setConversation } from "./conversations.js";

export const ptt = {
  pressed: false,
  recorder: null,
  chunks: [],
  startedAt: 0,
  stopMeter: null,

  async press() {
    if (this.pressed) return;
    this.pressed = true;
    hideNotice();
    cancelTurn(); // talking over the answer stops it, as on a walkie-talkie
    player.context();
    let stream;
    try {
      stream = await microphone();
    } catch (error) {
      this.pressed = false;
      showError(error);
      return;
    }
    if (!this.pressed) {
      // released while the browser asked for permission
      setActivity(t("The microphone is ready: hold the button while you speak."));
      releaseMicrophoneSoon();
      return;
    }
    const mimeType = RECORDING_TYPES.find((type) => window.MediaRecorder?.isTypeSupported(type));
    try {
      this.recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    } catch (error) {
      this.pressed = false;
      showNotice(t("This browser cannot record audio: {error}", { error: error.message }));
      return;
    }
    this.chunks = [];
    this.recorder.ondataavailable = (event) => event.data.size && this.chunks.push(event.data);
    this.recorder.start();
    this.startedAt = performance.now();
    this.stopMeter = meter.follow(stream);
    setTalkState("recording", t("Release to send"));
    setActivity(t("Listening… release to send."));
  },

  async release() {
    if (!this.pressed) return;
    this.pressed = false;
    const recorder = this.recorder;
    if (!recorder) return;
    this.recorder = null;
    const stopped = new Promise((resolve) => recorder.addEventListener("stop", resolve, { once: true }));
    recorder.stop();
    await stopped;
    this.stopMeter?.();
    releaseMicrophoneSoon();
    setTalkState("idle");
    const heldMs = performance.now() - this.startedAt;
    if (heldMs < MIN_RECORDING_MS) {
      setActivity(t("Hold the button while you speak, then let go."));
      return;
    }
    const blob = new Blob(this.chunks, { type: recorder.mimeType || this.chunks[0]?.type || "audio/webm" });
    await spokenTurn(blob);
  },
};

export function extensionFor(type) {
  if (type.includes("mp4")) return "m4a";
  if (type.includes("ogg")) return "ogg";
  return "webm";
}

export async function spokenTurn(blob) {
  const form = new FormData();
  form.append("audio_file", blob, `speech.${extensionFor(blob.type)}`);
  form.append("stream", "true");
  form.append("format", "wav");
  if (state.conversationId) form.append("conversation_id", state.conversationId);
  if (state.voice) form.append("voice", state.voice);
  const turn = beginTurn();
  const user = new MessageView("user", "", { pending: true });
  let assistant = null;
  setTalkState("answering"); // holding the button again interrupts the answer
  setActivity(t("Transcribing…"));
  try {
    const response = await api("/conversation", { method: "POST", form, raw: true, signal: turn.abort.signal });
    for await (const { event, data } of readEvents(response)) {
      if (event === "transcript") {
        user.pending = false;
        user.text = data.text || t("(nothing was heard)");
        if (!data.text) user.el.classList.add("empty");
        setConversation(data.conversation_id);
        setActivity(t(data.text ? "Thinking…" : "Nothing was heard: hold the button while you speak."));
      } else if (event === "reply_delta") {
        assistant ??= new MessageView("assistant", "", { pending: true });
        assistant.append(data.text);
      } else if (event === "audio") {
        const view = assistant;
        const words = view?.spokenWords(() => player.now());
        words?.add(data.words);
        const at = data.start ?? 0;
        player.whenCut(() => view?.markInterrupted());
        player.enqueueFile(
          base64ToBuffer(data.audio),
          (seconds) => view?.addPlayed(seconds),
          (clock, seconds) => words?.anchor(at, clock, seconds),
        );
        setActivity(t("Speaking…"));
      } else if (event === "done") {
        if (assistant) {
          assistant.pending = false;
          assistant.setTools(data.tools);
          assistant.setTimings(data.timings);
          assistant.setAudio(data.audio_url);
        } else if (data.transcript) {
          user.setTimings(data.timings);
        }
      } else if (event === "error") {
        throw new ApiError(200, data.code, data.message);
      }
    }
    if (state.turn === turn) setActivity(player.playing ? t("Speaking…") : "");
  } catch (error) {
    if (error.name === "AbortError") {
      assistant?.markInterrupted();
      if (user.text === "") user.el.remove();
      return;
    }
    const message = explain(error);
    showNotice(message, "error", detailOf(error));
    if (!user.text) {
      user.fail(t("(your recording was not answered)"));
      user.offerRetry(() => spokenTurn(blob));
    }
    assistant?.fail(message);
    setActivity("");
  } finally {
    if (!ptt.recorder) setTalkState("idle");
    finishTurn(turn);
  }
}
