// The words of a spoken reply, each lit while it is heard; a reply cut short shows where.
//
// The server gives each piece of a reply its words with times in seconds from the start of the
// reply's audio. The page knows when it started playing each stretch of that audio (an anchor:
// reply time -> AudioContext or wall-clock time), so it can tell which word is being heard now.

import { t } from "./i18n.js";

const CJK = /[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]/;
// A word that ends within this of where playback is counts as heard: the times are rounded to the
// millisecond and a decoded piece can be a few samples shorter than the server's.
const SLACK_S = 0.03;

function joinable(previous, word) {
  return previous && !(CJK.test(previous.slice(-1)) && CJK.test(word[0]));
}

// Letters and digits only: the server's `said` and the words may differ in punctuation and markup.
function letters(text) {
  return text.toLowerCase().replace(/[^\p{L}\p{N}]/gu, "");
}

export class SpokenWords {
  constructor(host, now) {
    this.el = document.createElement("p");
    this.el.className = "words";
    this.el.setAttribute("aria-hidden", "true"); // the text itself is read out by the reply's .text
    host.append(this.el);
    this.now = now; // () => seconds on the anchors' clock
    this.words = [];
    this.anchors = [];
    this.frame = 0;
    this.current = -1;
    this.cut = false;
  }

  // A piece's words, [{word, start, end}] on the reply's clock.
  add(words) {
    for (const word of words || []) {
      const span = document.createElement("span");
      span.textContent = word.word;
      const last = this.words[this.words.length - 1];
      if (joinable(last?.word, word.word)) this.el.append(" ");
      this.el.append(span);
      this.words.push({ ...word, span });
    }
    this.follow();
  }

  // `seconds` of the reply's audio, from `at` on its reply clock, began playing at `clock`.
  anchor(at, clock, seconds) {
    this.anchors.push({ at, clock, seconds });
    this.follow();
  }

  // Where the listener is in the reply now (null before any of it played).
  position() {
    const now = this.now();
    let found = null;
    for (const anchor of this.anchors) {
      if (anchor.clock > now) break;
      found = anchor.at + Math.min(now - anchor.clock, anchor.seconds);
    }
    return found;
  }

  follow() {
    // Runs while there are words still to be heard and audio to hear them in; add() and anchor()
    // start it again.
    if (this.frame || this.cut || !this.words.length || !this.anchors.length) return;
    const step = () => {
      this.frame = 0;
      const at = this.position();
      if (at !== null) this.light(at);
      const last = this.words[this.words.length - 1];
      const playing = this.anchors.some((a) => this.now() < a.clock + a.seconds);
      if (!this.cut && at !== null && at + SLACK_S < last.end && playing) this.frame = requestAnimationFrame(step);
      else if (!this.cut && at === null) this.frame = requestAnimationFrame(step); // about to start
    };
    this.frame = requestAnimationFrame(step);
  }

  light(at) {
    let current = -1;
    this.words.forEach((word, index) => {
      const said = word.end <= at + SLACK_S;
      word.span.classList.toggle("said", said);
      if (!said && word.start <= at) current = index;
    });
    if (current !== this.current) {
      this.words[this.current]?.span.classList.remove("current");
      this.words[current]?.span.classList.add("current");
      this.current = current;
      this.el.dataset.currentWord = current >= 0 ? this.words[current].word : "";
    }
    this.el.dataset.heardWords = String(this.words.filter((word) => word.end <= at + SLACK_S).length);
  }

  // The reply was cut: the words heard stay (those of `said`, what the server counts as heard;
  // without it, those that had ended where playback stopped), the rest are shown as not heard,
  // with a mark at the cut.
  stopAt(said) {
    const at = this.position();
    this.cut = true;
    cancelAnimationFrame(this.frame);
    let kept = 0;
    if (said === undefined) {
      kept = at === null ? 0 : this.words.filter((word) => word.end <= at + SLACK_S).length;
    } else {
      const heard = letters(said);
      let prefix = "";
      for (const word of this.words) {
        const next = prefix + letters(word.word);
        if (!heard.startsWith(next)) break;
        prefix = next;
        kept += 1;
      }
    }
    this.words.forEach((word, index) => {
      word.span.classList.remove("current");
      word.span.classList.toggle("said", index < kept);
      word.span.classList.toggle("unheard", index >= kept);
    });
    if (kept < this.words.length) {
      const mark = document.createElement("span");
      mark.className = "cut-mark";
      mark.textContent = "✂";
      mark.title = t("cut here: the words after it were not heard");
      const before = this.words[kept - 1]?.span;
      if (before) before.after(mark);
      else this.el.prepend(mark);
    }
    this.el.dataset.heardWords = String(kept);
    this.el.dataset.cutAfter = String(kept);
  }
}
