// Hands-free: the realtime session, where the server detects turns and barge-in. Over WebRTC
// (/conversation/calls: the microphone as a WebRTC track, so that the browser's echo cancellation
// hears the reply it plays and the reply does not interrupt itself on a laptop's speakers), or over
// the WebSocket (/ws/conversation) when WebRTC cannot connect.

import { t } from "./i18n.js";
import { $, state, WS_SAMPLE_RATES, WS_SUBPROTOCOL } from "./state.js";
import { api, ApiError, apiKey, authHeaders, base64Url, errorFrom } from "./server.js";
import { explain, hideNotice, setActivity, showError, showNotice } from "./notices.js";
import { player, updatePlaybackControls } from "./playback.js";
import { MessageView } from "./transcript.js";
import { meter, mic, microphone, releaseMicrophoneSoon } from "./microphone.js";
import { setTalkState } from "./controls.js";
import { refreshConversations, setConversation } from "./conversations.js";

export const live = {
  ws: null,
  source: null,
  node: null,
  user: null,
  heard: null, // the user's words so far (transcript_delta), until the transcript
  assistant: null,
  answering: false,
  speaking: null, // over WebRTC: the reply view whose audio is playing, until audio_end
  outputRate: 24000,
  opened: false,
  closing: false,
  starting: false,

  async start() {
    if (this.starting) return;
    this.starting = true;
    try {
      await this.open();
    } finally {
      this.starting = false;
    }
  },

  async open() {
    hideNotice();
    const ctx = player.context();
    try {
      await microphone(); // kept in mic.stream; captured once the server is ready
    } catch (error) {
      showError(error);
      return;
    }
    if (window.RTCPeerConnection) {
      try {
        await this.openRtc();
        return;
      } catch (error) {
        if (error instanceof ApiError && [401, 403, 429].includes(error.status)) {
          showError(error); // refused (a key, a quota): the WebSocket would be refused too
          setTalkState("idle");
          setActivity("");
          return;
        }
        // No WebRTC path to the server (a proxy, a firewall): the WebSocket instead.
      }
    }
    if (!WS_SAMPLE_RATES.includes(ctx.sampleRate)) {
      showNotice(t("Hands-free mode cannot use this audio device's rate ({rate} Hz); use push to talk.", { rate: ctx.sampleRate }));
      return;
    }
    try {
      await ctx.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
    } catch (error) {
      showNotice(t("This browser cannot capture audio for hands-free mode ({error}); use push to talk.", { error: error.message }));
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = [WS_SUBPROTOCOL];
    if (apiKey()) protocols.push(`bearer.${base64Url(apiKey())}`);
    const ws = new WebSocket(`${scheme}//${location.host}/ws/conversation`, protocols);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    $("talk").dataset.transport = "websocket";
    this.opened = false;
    this.closing = false;
    setTalkState("busy", t("Stop"));
    setActivity(t("Connecting…"));
    ws.onopen = () => {
      this.opened = true;
      const start = { type: "start", sample_rate: ctx.sampleRate };
      if (state.conversationId) start.conversation_id = state.conversationId;
      if (state.voice) start.voice = state.voice;
      ws.send(JSON.stringify(start));
    };
    ws.onmessage = (message) => {
      if (typeof message.data === "string") this.event(JSON.parse(message.data));
      else this.audio(message.data);
    };
    ws.onclose = (event) => this.closed(event);
  },

  // The session over WebRTC: resolves once its events channel is open, throws if it cannot be.
  async openRtc() {
    const pc = new RTCPeerConnection();
    const channel = pc.createDataChannel("events");
    const sound = new Audio();
    sound.autoplay = true;
    for (const track of mic.stream.getAudioTracks()) pc.addTrack(track, mic.stream);
    pc.ontrack = ({ streams, track }) => {
      sound.srcObject = streams[0] ?? new MediaStream([track]);
      sound.play().catch(() => {});
    };
    const link = {
      rtc: true,
      get readyState() {
        return channel.readyState === "open" ? WebSocket.OPEN : WebSocket.CLOSED;
      },
      send: (text) => channel.send(text),
      close: () => {
        channel.close();
        pc.close();
        sound.srcObject = null;
      },
    };
    setTalkState("busy", t("Stop"));
    setActivity(t("Connecting…"));
    let call = null; // the call's URL once answered: hung up if it never connects
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await settled(pc, "icegatheringstatechange", () => pc.iceGatheringState === "complete", 3000);
      let response;
      try {
        response = await fetch("/conversation/calls", {
          method: "POST",
          headers: { "Content-Type": "application/sdp", ...authHeaders() },
          body: pc.localDescription.sdp,
        });
      } catch {
        throw new ApiError(0, "network", t("The server cannot be reached. Is it running?"));
      }
      if (!response.ok) throw await errorFrom(response);
      call = response.headers.get("Location");
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
      await settled(channel, "open", () => channel.readyState === "open", 10000);
    } catch (error) {
      link.close();
      // Give its session back at once, or the WebSocket fallback may find the key's sessions taken.
      if (call) fetch(call, { method: "DELETE", headers: authHeaders() }).catch(() => {});
      throw error;
    }
    this.ws = link;
    $("talk").dataset.transport = "webrtc";
    this.opened = true;
    this.closing = false;
    channel.onmessage = (message) => this.event(JSON.parse(message.data));
    channel.onclose = () => {
      if (this.ws === link) this.closed({ code: this.closing ? 1000 : 1006, reason: "" });
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && this.ws === link) link.close();
    };
    const start = { type: "start", sample_rate: 16000 };
    if (state.conversationId) start.conversation_id = state.conversationId;
    if (state.voice) start.voice = state.voice;
    channel.send(JSON.stringify(start));
  },

  capture() {
    const ctx = player.context();
    this.source = ctx.createMediaStreamSource(mic.stream);
    this.node = new AudioWorkletNode(ctx, "pcm-capture", {
      processorOptions: { frameSamples: Math.round(ctx.sampleRate * 0.04) },
    });
    this.node.port.onmessage = ({ data }) => {
      if (this.ws?.readyState === WebSocket.OPEN && !this.closing) this.ws.send(data.pcm);
      meter.set(data.peak);
    };
    this.source.connect(this.node);
    this.node.connect(ctx.destination); // silent: the worklet writes no output
  },

  event(message) {
    switch (message.type) {
      case "ready":
        setConversation(message.conversation_id);
        if (!this.ws?.rtc) this.capture(); // over WebRTC the microphone is the call's own track
        setTalkState("listening", t("Stop"));
        setActivity(t("Listening: just talk."));
        break;
      case "speech_start":
        setActivity(t("Hearing you…"));
        break;
      case "speech_end":
        setActivity(t("Thinking…"));
        this.answering = true;
        updatePlaybackControls();
        break;
      case "transcript_delta":
        // The utterance so far, while the user speaks: shown greyed, replaced by the transcript.
        if (!message.text) break;
        this.heard ??= new MessageView("user", "", { pending: true });
        this.heard.text = message.text;
        break;
      case "transcript":
        if (message.text) {
          this.user = this.heard ?? new MessageView("user");
          this.user.text = message.text;
          this.user.pending = false;
        } else {
          this.heard?.el.remove();
          setActivity(t("That was not understood as words. Listening."));
        }
        this.heard = null;
        break;
      case "reply_delta":
        this.assistant ??= new MessageView("assistant", "", { pending: true });
        this.assistant.append(message.text);
        break;
      case "audio_start":
        this.outputRate = message.sample_rate;
        this.speaking = this.assistant;
        this.replyAt = 0;
        this.trackOrigin = performance.now() / 1000;
        break;
      case "audio_words":
        if ($("talk").dataset.transport === "webrtc") {
          // The call's track plays each piece in real time after the one before, or as soon as it
          // comes when the track had run dry: that is where its words are heard.
          const now = performance.now() / 1000;
          const clock = Math.max((this.trackOrigin ?? now) + message.start, now);
          this.trackOrigin = clock - message.start;
          const words = this.assistant?.spokenWords(() => performance.now() / 1000);
          words?.add(message.words);
          words?.anchor(message.start, clock, message.duration ?? Infinity);
        } else {
          this.assistant?.spokenWords(() => player.now()).add(message.words);
        }
        setActivity(t("Speaking… talk to interrupt."));
        break;
      case "turn_end":
        if (this.assistant) {
          this.assistant.pending = false;
          this.assistant.setTools(message.tools);
          this.assistant.setTimings(message.timings);
          this.assistant.setAudio(message.audio_url);
        }
        this.endTurn();
        if (this.assistant === null && !player.playing) setActivity(t("Listening: just talk."));
        break;
      case "audio_end": // over WebRTC: the reply has played
        this.speaking?.addPlayed(message.played_s);
        this.speaking = null;
        if (!this.answering && this.ws) setActivity(t("Listening: just talk."));
        break;
      case "interrupted":
        player.stop();
        this.speaking = null;
        this.assistant?.markInterrupted(message.said);
        this.endTurn();
        setActivity(t("Interrupted. Listening."));
        break;
      case "error": {
        this.dropHeard();
        const error = new ApiError(0, message.code, message.message);
        showError(error);
        if (this.assistant) this.assistant.fail(explain(error));
        this.endTurn();
        break;
      }
      default:
        break; // session_end, and events of later versions
    }
  },

  // A partial transcript whose turn never came (the session ended, or the turn failed).
  dropHeard() {
    this.heard?.el.remove();
    this.heard = null;
  },

  endTurn() {
    this.user = null;
    this.assistant = null;
    this.answering = false;
    updatePlaybackControls();
    refreshConversations();
  },

  audio(data) {
    const view = this.assistant;
    const at = this.replyAt ?? 0;
    this.replyAt = at + data.byteLength / 2 / this.outputRate;
    player.enqueuePcm16(
      data,
      this.outputRate,
      (seconds) => {
        view?.addPlayed(seconds);
        if (!player.playing && !this.answering && this.ws) setActivity(t("Listening: just talk."));
      },
      (clock, seconds) => view?.wordsView?.anchor(at, clock, seconds),
    );
  },

  interrupt() {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "interrupt" }));
    player.stop();
  },

  stop() {
    if (!this.ws) return;
    this.closing = true;
    this.release();
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "stop" }));
    else this.ws.close();
    setActivity(this.answering ? t("Finishing the answer…") : "");
  },

  release() {
    this.source?.disconnect();
    this.node?.port.close();
    this.node?.disconnect();
    this.source = null;
    this.node = null;
    meter.set(0);
  },

  async closed(event) {
    const wasOpened = this.opened;
    this.release();
    this.ws = null;
    this.answering = false;
    this.dropHeard();
    this.assistant?.markInterrupted();
    this.assistant = null;
    releaseMicrophoneSoon();
    setTalkState("idle");
    updatePlaybackControls();
    if (!this.closing && !wasOpened) {
      // The handshake failed: find out why with a plain request (a 401 opens Settings).
      try {
        await api("/conversations?limit=1");
        showNotice(t("The realtime connection could not be opened. Check that the server is reachable."));
      } catch (error) {
        showError(error);
      }
    } else if (!this.closing && event.code === 1013) {
      if ($("notice").hidden) showNotice(t("The server is busy: too many live sessions. Try again shortly."));
    } else if (!this.closing && event.code !== 1000) {
      if ($("notice").hidden) showNotice(t("The live session ended ({reason}).", { reason: event.reason || t("code {code}", { code: event.code }) }));
    }
    setActivity(this.closing || event.code === 1000 ? "" : $("activity").textContent);
    this.closing = false;
  },
};

// Until `ready()` after `event` on `target`, or a timeout.
function settled(target, event, ready, timeoutMs) {
  return new Promise((resolve, reject) => {
    if (ready()) {
      resolve();
      return;
    }
    const timer = setTimeout(() => {
      target.removeEventListener(event, check);
      reject(new Error(`${event}: timed out`));
    }, timeoutMs);
    function check() {
      if (!ready()) return;
      clearTimeout(timer);
      target.removeEventListener(event, check);
      resolve();
    }
    target.addEventListener(event, check);
  });
}
