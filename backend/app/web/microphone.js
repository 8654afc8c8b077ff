// The microphone: opened on demand with a clear reason when it cannot be, released when idle; the level meter.

import { t } from "./i18n.js";
import { $, MIC_IDLE_RELEASE_MS } from "./state.js";
import { player } from "./playback.js";
import { ptt } from "./push-to-talk.js";
import { live } from "./hands-free.js";

export class MicrophoneError extends Error {}

export const mic = { stream: null, releaseTimer: null };

export async function microphone() {
  clearTimeout(mic.releaseTimer);
  if (mic.stream?.active) return mic.stream;
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    throw new MicrophoneError(
      t(
        "The browser only allows the microphone on a secure page: open this page over HTTPS, " +
          "or as http://localhost on the server itself. You can still type a message.",
      ),
    );
  }
  try {
    mic.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    return mic.stream;
  } catch (error) {
    const name = error?.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      throw new MicrophoneError(
        t(
          "Microphone access was denied. Allow the microphone for this site (the icon at the left of " +
            "the address bar) and try again, or type a message instead.",
        ),
      );
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      throw new MicrophoneError(t("No microphone was found. Connect one and try again, or type a message."));
    }
    if (name === "NotReadableError") {
      throw new MicrophoneError(t("The microphone is in use by another program, or the system blocked it."));
    }
    throw new MicrophoneError(t("The microphone could not be opened: {error}", { error: error?.message || name }));
  }
}

// Push to talk keeps the microphone a little while between presses, then lets it go.
export function releaseMicrophoneSoon() {
  clearTimeout(mic.releaseTimer);
  mic.releaseTimer = setTimeout(() => {
    if (live.ws || ptt.recorder) return;
    mic.stream?.getTracks().forEach((track) => track.stop());
    mic.stream = null;
  }, MIC_IDLE_RELEASE_MS);
}

export const meter = {
  frame: 0,
  set(peak) {
    $("meter-level").style.width = `${Math.min(100, Math.round(peak * 140))}%`;
  },
  follow(stream) {
    const ctx = player.context();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    const source = ctx.createMediaStreamSource(stream);
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const sample of samples) peak = Math.max(peak, Math.abs(sample));
      this.set(peak);
      this.frame = requestAnimationFrame(tick);
    };
    tick();
    return () => {
      cancelAnimationFrame(this.frame);
      source.disconnect();
      this.set(0);
    };
  },
};
