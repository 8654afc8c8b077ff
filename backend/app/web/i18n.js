// The page's words in English, Traditional Chinese (zh-TW) and Simplified Chinese (zh-CN). The
// language is the one chosen in the header's switch (kept in this browser), else the browser's own:
// zh-TW, zh-HK, zh-MO and zh-Hant read Traditional, any other Chinese Simplified, the rest English.
// A string is looked up by its English text; {name} marks a value put in. Markup carries
// data-i18n (its text) and data-i18n-attrs (a comma-separated list of attributes to translate).

export const LANGUAGES = { en: "English", "zh-TW": "繁體中文", "zh-CN": "简体中文" };

export const LANGUAGE_STORAGE = "voice-dialogue.language";

// English -> [zh-TW, zh-CN]
const WORDS = {
  "Voice dialogue": ["語音對話", "语音对话"],
  "Skip to the talk button": ["跳到說話按鈕", "跳到说话按钮"],
  Conversations: ["對話", "对话"],
  "Conversations and voices": ["對話與聲音", "对话与声音"],
  "Connecting…": ["連線中…", "连接中…"],
  Settings: ["設定", "设置"],
  Language: ["語言", "语言"],
  New: ["新增", "新建"],
  "Show older": ["顯示較早的", "显示更早的"],
  "No conversations yet.": ["還沒有對話。", "还没有对话。"],
  Voices: ["聲音", "声音"],
  "Delete the selected voice": ["刪除所選的聲音", "删除所选的声音"],
  "Add a voice": ["新增聲音", "添加声音"],
  "A clip of 3–60 seconds of one person speaking, in any audio format.": [
    "一段 3 到 60 秒、只有一個人說話的錄音，任何音訊格式皆可。",
    "一段 3 到 60 秒、只有一个人说话的录音，任何音频格式均可。",
  ],
  "Audio file": ["音訊檔案", "音频文件"],
  Name: ["名稱", "名称"],
  "Letters and digits": ["字母與數字", "字母和数字"],
  "An ISO 639 code such as en or zh": ["ISO 639 語言代碼，例如 en 或 zh", "ISO 639 语言代码，例如 en 或 zh"],
  Gender: ["性別", "性别"],
  Upload: ["上傳", "上传"],
  Dismiss: ["關閉", "关闭"],
  "New conversation": ["新對話", "新对话"],
  "Untitled conversation": ["未命名的對話", "未命名的对话"],
  "Transcript and replies": ["逐字稿與回覆", "转写与回复"],
  "Hold the button (or the space bar) and speak; let go to hear the answer.": [
    "按住按鈕（或空白鍵）說話，放開後聆聽回答。",
    "按住按钮（或空格键）说话，松开后收听回答。",
  ],
  "Hands-free mode listens continuously: just talk, and talk over the answer to interrupt it.": [
    "免持模式會持續聆聽：直接說話即可，在回答時開口就能打斷它。",
    "免提模式会持续聆听：直接说话即可，在回答时开口就能打断它。",
  ],
  Mode: ["模式", "模式"],
  "Push to talk": ["按住說話", "按住说话"],
  "Hands-free": ["免持", "免提"],
  Voice: ["聲音", "声音"],
  "Hold to talk": ["按住說話", "按住说话"],
  Start: ["開始", "开始"],
  Stop: ["停止", "停止"],
  "Release to send": ["放開即送出", "松开即发送"],
  "Hold the button or the space bar while you speak. Enter starts and stops too.": [
    "說話時按住按鈕或空白鍵；也可以按 Enter 開始和停止。",
    "说话时按住按钮或空格键；也可以按 Enter 开始和停止。",
  ],
  "Start, then just talk; pause to let it answer, talk over it to interrupt. Space or Enter starts and stops.":
    [
      "按開始後直接說話；停頓一下讓它回答，開口即可打斷。空白鍵或 Enter 開始和停止。",
      "按开始后直接说话；停顿一下让它回答，开口即可打断。空格键或 Enter 开始和停止。",
    ],
  "Stop speaking": ["停止播放", "停止播放"],
  "Type a message": ["輸入訊息", "输入消息"],
  "…or type a message": ["…或輸入訊息", "…或输入消息"],
  Send: ["送出", "发送"],
  "API key": ["API 金鑰", "API 密钥"],
  "Kept in this browser only (local storage) and sent to this server alone.": [
    "只保存在這個瀏覽器（本機儲存），也只會傳送給這台伺服器。",
    "只保存在这个浏览器（本地存储），也只会发送给这台服务器。",
  ],
  "Forget key": ["忘記金鑰", "清除密钥"],
  Cancel: ["取消", "取消"],
  Save: ["儲存", "保存"],
  You: ["你", "你"],
  Assistant: ["助理", "助手"],
  "Play again": ["再播放一次", "再播放一次"],
  "Play this reply again": ["再播放一次這個回覆", "再播放一次这条回复"],
  "Send again": ["重新送出", "重新发送"],
  interrupted: ["已打斷", "已打断"],
  "cut here: the words after it were not heard": ["在此打斷：之後的字沒有被聽到", "在此打断：之后的字没有被听到"],
  "Tools used": ["使用的工具", "使用的工具"],
  "(failed)": ["（失敗）", "（失败）"],
  "not spoken": ["未朗讀", "未朗读"],
  "{count} messages": ["{count} 則訊息", "{count} 条消息"],
  Timings: ["耗時", "耗时"],
  "▶ {seconds} s played": ["▶ 已播放 {seconds} 秒", "▶ 已播放 {seconds} 秒"],
  "speech-to-text": ["語音轉文字", "语音转文字"],
  "first token": ["首個詞元", "首个词元"],
  LLM: ["語言模型", "语言模型"],
  "first synthesis": ["首段合成", "首段合成"],
  TTS: ["語音合成", "语音合成"],
  "to first audio": ["到首段語音", "到首段语音"],
  total: ["總計", "总计"],
  Offline: ["離線", "离线"],
  Ready: ["就緒", "就绪"],
  "Loading models…": ["載入模型中…", "加载模型中…"],
  Degraded: ["部分故障", "部分故障"],
  "The server could not load its models: {error}.": [
    "伺服器無法載入模型：{error}。",
    "服务器无法加载模型：{error}。",
  ],
  "see its log": ["請查看它的日誌", "请查看它的日志"],
  "Thinking…": ["思考中…", "思考中…"],
  "Speaking…": ["說話中…", "说话中…"],
  "Transcribing…": ["轉寫中…", "转写中…"],
  "Listening… release to send.": ["聆聽中…放開即送出。", "聆听中…松开即发送。"],
  "The microphone is ready: hold the button while you speak.": [
    "麥克風已就緒：說話時請按住按鈕。",
    "麦克风已就绪：说话时请按住按钮。",
  ],
  "Hold the button while you speak, then let go.": ["說話時按住按鈕，說完再放開。", "说话时按住按钮，说完再松开。"],
  "(nothing was heard)": ["（沒有聽到聲音）", "（没有听到声音）"],
  "Nothing was heard: hold the button while you speak.": [
    "沒有聽到聲音：說話時請按住按鈕。",
    "没有听到声音：说话时请按住按钮。",
  ],
  "(your recording was not answered)": ["（你的錄音沒有得到回答）", "（你的录音没有得到回答）"],
  "This browser cannot record audio: {error}": ["這個瀏覽器無法錄音：{error}", "这个浏览器无法录音：{error}"],
  "Listening: just talk.": ["聆聽中：直接說話即可。", "聆听中：直接说话即可。"],
  "Hearing you…": ["正在聽你說…", "正在听你说…"],
  "That was not understood as words. Listening.": ["沒有聽出字句。繼續聆聽。", "没有听出字句。继续聆听。"],
  "Speaking… talk to interrupt.": ["說話中…開口即可打斷。", "说话中…开口即可打断。"],
  "Interrupted. Listening.": ["已打斷。繼續聆聽。", "已打断。继续聆听。"],
  "Finishing the answer…": ["正在完成回答…", "正在完成回答…"],
  "Hands-free mode cannot use this audio device's rate ({rate} Hz); use push to talk.": [
    "免持模式無法使用這個音訊裝置的取樣率（{rate} Hz）；請改用按住說話。",
    "免提模式无法使用这个音频设备的采样率（{rate} Hz）；请改用按住说话。",
  ],
  "This browser cannot capture audio for hands-free mode ({error}); use push to talk.": [
    "這個瀏覽器無法為免持模式擷取音訊（{error}）；請改用按住說話。",
    "这个浏览器无法为免提模式采集音频（{error}）；请改用按住说话。",
  ],
  "The realtime connection could not be opened. Check that the server is reachable.": [
    "無法建立即時連線。請確認伺服器可以連上。",
    "无法建立实时连接。请确认服务器可以访问。",
  ],
  "The server is busy: too many live sessions. Try again shortly.": [
    "伺服器忙碌：即時工作階段太多。請稍後再試。",
    "服务器繁忙：实时会话太多。请稍后再试。",
  ],
  "The live session ended ({reason}).": ["即時工作階段已結束（{reason}）。", "实时会话已结束（{reason}）。"],
  "code {code}": ["代碼 {code}", "代码 {code}"],
  "The browser only allows the microphone on a secure page: open this page over HTTPS, or as http://localhost on the server itself. You can still type a message.":
    [
      "瀏覽器只允許在安全的網頁使用麥克風：請用 HTTPS 開啟本頁，或在伺服器本機用 http://localhost 開啟。你仍然可以輸入訊息。",
      "浏览器只允许在安全的网页使用麦克风：请用 HTTPS 打开本页，或在服务器本机用 http://localhost 打开。你仍然可以输入消息。",
    ],
  "Microphone access was denied. Allow the microphone for this site (the icon at the left of the address bar) and try again, or type a message instead.":
    [
      "麥克風權限被拒絕。請允許本網站使用麥克風（網址列左側的圖示）後再試，或改為輸入訊息。",
      "麦克风权限被拒绝。请允许本网站使用麦克风（地址栏左侧的图标）后再试，或改为输入消息。",
    ],
  "No microphone was found. Connect one and try again, or type a message.": [
    "找不到麥克風。請接上麥克風後再試，或輸入訊息。",
    "找不到麦克风。请连接麦克风后再试，或输入消息。",
  ],
  "The microphone is in use by another program, or the system blocked it.": [
    "麥克風正被其他程式使用，或被系統封鎖。",
    "麦克风正被其他程序使用，或被系统阻止。",
  ],
  "The microphone could not be opened: {error}": ["無法開啟麥克風：{error}", "无法打开麦克风：{error}"],
  "Something went wrong: {error}": ["發生錯誤：{error}", "出错了：{error}"],
  " Try again in {seconds} s.": [" 請在 {seconds} 秒後再試。", " 请在 {seconds} 秒后再试。"],
  " Try again shortly.": [" 請稍後再試。", " 请稍后再试。"],
  "The models are still loading.{wait}": ["模型仍在載入。{wait}", "模型仍在加载。{wait}"],
  "The server is busy with other requests.{wait}": ["伺服器正忙於其他請求。{wait}", "服务器正忙于其他请求。{wait}"],
  "The server cannot answer right now: {error}.{wait}": ["伺服器暫時無法回答：{error}。{wait}", "服务器暂时无法回答：{error}。{wait}"],
  "This server needs an API key: enter it in Settings (⚙).": [
    "這台伺服器需要 API 金鑰：請在設定（⚙）中輸入。",
    "这台服务器需要 API 密钥：请在设置（⚙）中输入。",
  ],
  "The server took too long: {error}.": ["伺服器處理太久：{error}。", "服务器处理太久：{error}。"],
  "The API key was refused.": ["API 金鑰被拒絕。", "API 密钥被拒绝。"],
  "The server could not do that ({code}).": ["伺服器無法完成這項操作（{code}）。", "服务器无法完成这项操作（{code}）。"],
  "The server could not use that request.": ["伺服器無法處理這個請求。", "服务器无法处理这个请求。"],
  "Something in the request is not valid.": ["請求中有無效的內容。", "请求中有无效的内容。"],
  "The audio could not be read: it may be damaged, or not audio at all.": [
    "無法讀取這段音訊：它可能已損壞，或根本不是音訊。",
    "无法读取这段音频：它可能已损坏，或根本不是音频。",
  ],
  "The recording is longer than this server accepts.": ["錄音長度超過這台伺服器接受的上限。", "录音长度超过这台服务器接受的上限。"],
  "The text is longer than this server accepts.": ["文字長度超過這台伺服器接受的上限。", "文字长度超过这台服务器接受的上限。"],
  "The file is larger than this server accepts.": ["檔案大小超過這台伺服器接受的上限。", "文件大小超过这台服务器接受的上限。"],
  "The server cannot read this kind of file.": ["伺服器無法讀取這種檔案。", "服务器无法读取这种文件。"],
  "That was not found on the server.": ["伺服器上找不到它。", "服务器上找不到它。"],
  "That voice file is not in the voice library.": ["這個聲音檔不在聲音庫裡。", "这个声音文件不在声音库里。"],
  "The server has no such model.": ["伺服器沒有這個模型。", "服务器没有这个模型。"],
  "That name is taken already, or the library is full.": ["這個名稱已被使用，或聲音庫已滿。", "这个名称已被使用，或声音库已满。"],
  "The server does not allow that.": ["伺服器不允許這項操作。", "服务器不允许这项操作。"],
  "The message is too long for the language model.": ["這則訊息對語言模型來說太長了。", "这条消息对语言模型来说太长了。"],
  "The server took too long to answer.": ["伺服器回應時間過長。", "服务器响应时间过长。"],
  "The language model's server is not answering right now.{wait}": [
    "語言模型的伺服器目前沒有回應。{wait}",
    "语言模型的服务器目前没有响应。{wait}",
  ],
  "The server's disk is full: its operator must free some space.": [
    "伺服器的磁碟已滿：需要由管理員釋出空間。",
    "服务器的磁盘已满：需要由管理员释放空间。",
  ],
  "The server cannot keep conversations right now: its database is unreachable.{wait}": [
    "伺服器目前無法保存對話：連不上它的資料庫。{wait}",
    "服务器目前无法保存对话：连不上它的数据库。{wait}",
  ],
  "The server ran into an error of its own.": ["伺服器內部發生錯誤。", "服务器内部发生错误。"],
  "Too many requests: slow down.{wait}": ["請求太多，請放慢速度。{wait}", "请求太多，请放慢速度。{wait}"],
  "The live session ended: nothing was received for a while.": [
    "即時工作階段已結束：有一段時間沒有收到任何聲音。",
    "实时会话已结束：有一段时间没有收到任何声音。",
  ],
  "The live session reached its time limit.": ["即時工作階段已達時間上限。", "实时会话已达时间上限。"],
  "The live session broke off: the page and the server did not understand each other.": [
    "即時工作階段中斷：網頁與伺服器之間的通訊出錯。",
    "实时会话中断：网页与服务器之间的通信出错。",
  ],
  "The server cannot keep conversations right now: {error}.": ["伺服器目前無法保存對話：{error}。", "服务器目前无法保存对话：{error}。"],
  "This server needs an API key.": ["這台伺服器需要 API 金鑰。", "这台服务器需要 API 密钥。"],
  "The server cannot be reached. Is it running?": ["無法連上伺服器。它有在執行嗎？", "无法连接服务器。它在运行吗？"],
  "That conversation no longer exists.": ["這個對話已不存在。", "这个对话已不存在。"],
  "That audio has expired on the server.": ["這段音訊在伺服器上已過期。", "这段音频在服务器上已过期。"],
  "Delete conversation: {title}": ["刪除對話：{title}", "删除对话：{title}"],
  'Delete the conversation "{title}" and its audio?': ["要刪除對話「{title}」及其音訊嗎？", "要删除对话“{title}”及其音频吗？"],
  "Default": ["預設", "默认"],
  "Default ({voice})": ["預設（{voice}）", "默认（{voice}）"],
  "This server's speech engine has one built-in voice, so every reply sounds the same; library voices are used when the server runs a voice-cloning engine (VibeVoice).":
    [
      "這台伺服器的語音引擎只有一個內建聲音，所以每個回覆聽起來都一樣；聲音庫裡的聲音要在伺服器使用聲音複製引擎（VibeVoice）時才會用到。",
      "这台服务器的语音引擎只有一个内置声音，所以每条回复听起来都一样；声音库里的声音要在服务器使用声音克隆引擎（VibeVoice）时才会用到。",
    ],
  "Uploading…": ["上傳中…", "上传中…"],
  "Added {name} ({seconds} s).": ["已新增 {name}（{seconds} 秒）。", "已添加 {name}（{seconds} 秒）。"],
  "Delete the voice {name}?": ["要刪除聲音 {name} 嗎？", "要删除声音 {name} 吗？"],
};

export function chooseLanguage(stored, preferred) {
  if (stored && stored in LANGUAGES) return stored;
  for (const tag of preferred) {
    const lower = tag.toLowerCase();
    if (!lower.startsWith("zh")) {
      if (lower.startsWith("en")) return "en";
      continue;
    }
    return /^zh-(tw|hk|mo|hant)/.test(lower) ? "zh-TW" : "zh-CN";
  }
  return "en";
}

// Read when the page loads (guarded: the module is also loaded outside a browser, by the tests).
const stored = typeof localStorage === "undefined" ? null : localStorage.getItem(LANGUAGE_STORAGE);
const preferred = typeof navigator === "undefined" ? [] : (navigator.languages ?? [navigator.language ?? "en"]);
let current = chooseLanguage(stored, preferred);

export function language() {
  return current;
}

// The English `text` in the page's language, with each {name} replaced from `values`.
export function t(text, values = {}) {
  const pair = WORDS[text];
  const chosen = pair && current !== "en" ? pair[current === "zh-TW" ? 0 : 1] : text;
  return chosen.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

// Every marked element of the page in the current language (their English kept as the key).
export function translatePage(root = document) {
  document.documentElement.lang = current;
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.dataset.i18n ||= element.textContent.trim().replace(/\s+/g, " ");
    element.textContent = t(element.dataset.i18n);
  }
  for (const element of root.querySelectorAll("[data-i18n-attrs]")) {
    for (const attribute of element.dataset.i18nAttrs.split(",")) {
      const key = `i18n${attribute.replace(/(^|-)(\w)/g, (m, dash, c) => c.toUpperCase())}`;
      element.dataset[key] ||= element.getAttribute(attribute) ?? "";
      element.setAttribute(attribute, t(element.dataset[key]));
    }
  }
  document.title = t("Voice dialogue");
}

export function setLanguage(chosen) {
  current = chosen in LANGUAGES ? chosen : "en";
  localStorage.setItem(LANGUAGE_STORAGE, current);
  translatePage();
}
