// A push-to-talk or typed turn in flight (one at a time, cancelled by the next), and the typed turn:
// the reply streams over POST /chat, then is spoken by POST /tts (streamed PCM).

import { t } from "./i18n.js";
import { state } from "./state.js";
import { api, ApiError, readEvents } from "./server.js";
import { explain, hideNotice, setActivity, showError } from "./notices.js";
import { player, updatePlaybackControls } from "./playback.js";
import { MessageView } from "./transcript.js";
import { refreshConversations, setConversation } from "./conversations.js";

// A push-to-talk or typed turn in flight: one at a time, cancelled by the next.
export function beginTurn() {
  const turn = { abort: new AbortController() };
  state.turn = turn;
  updatePlaybackControls();
  return turn;
}

export function finishTurn(turn) {
  if (state.turn === turn) state.turn = null;
  updatePlaybackControls();
  refreshConversations();
}

export function cancelTurn() {
  state.turn?.abort.abort();
  state.turn = null;
  player.stop();
}

// A typed message: the reply streams over POST /chat, then is spoken by POST /tts (streamed PCM).
export async function typedTurn(text) {
  cancelTurn();
  hideNotice();
  player.context();
  const turn = beginTurn();
  const user = new MessageView("user", text);
  const assistant = new MessageView("assistant", "", { pending: true });
  setActivity(t("Thinking…"));
  const sent = performance.now();
  let replied = false;
  try {
    const body = { text, stream: true };
    if (state.conversationId) body.conversation_id = state.conversationId;
    const response = await api("/chat", { method: "POST", json: body, raw: true, signal: turn.abort.signal });
    let reply = "";
    for await (const { event, data } of readEvents(response)) {
      if (event === "reply_delta") assistant.append(data.text);
      else if (event === "done") {
        reply = data.reply;
        replied = true;
        setConversation(data.conversation_id);
        assistant.setTools(data.tools);
        assistant.setTimings(data.timings);
      } else if (event === "error") throw new ApiError(200, data.code, data.message);
    }
    assistant.pending = false;
    if (reply.trim()) await speak(reply, assistant, turn, sent);
    if (state.turn === turn) setActivity(player.playing ? t("Speaking…") : "");
  } catch (error) {
    if (error.name === "AbortError") {
      assistant.markInterrupted();
      return;
    }
    showError(error);
    if (replied) {
      assistant.note(t("not spoken")); // the reply is stored; only its speech failed
    } else {
      assistant.fail(explain(error));
      user.offerRetry(() => {
        assistant.el.remove();
        typedTurn(text);
      });
    }
    setActivity("");
  } finally {
    finishTurn(turn);
  }
}

// The timings of a typed turn are the chat's; `first_audio_ms` is measured here, from sending the
// message to the first audio arriving.
export async function speak(text, view, turn, sent) {
  setActivity(t("Speaking…"));
  const body = { text, format: "pcm", stream: true };
  if (state.voice) body.voice = state.voice;
  const response = await api("/tts", { method: "POST", json: body, raw: true, signal: turn.abort.signal });
  const rate = Number(response.headers.get("X-Sample-Rate")) || 24000;
  const reader = response.body.getReader();
  let carry = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const bytes = new Uint8Array(carry.length + value.length);
    bytes.set(carry);
    bytes.set(value, carry.length);
    const even = bytes.length & ~1;
    carry = bytes.slice(even);
    if (!even) continue;
    if (view.timings && view.timings.first_audio_ms === undefined) {
      view.setTimings({ ...view.timings, first_audio_ms: performance.now() - sent });
    }
    player.enqueuePcm16(bytes.slice(0, even).buffer, rate, (seconds) => view.addPlayed(seconds));
  }
}
