// Turn one line of terminal output into styled text segments.
//
// Kept: SGR colours and attributes (ESC [ ... m), carriage return and backspace (the
// cursor moves and later text overwrites, as in a terminal, so a progress bar that
// redraws itself with \r shows as its last state), and erase in line (ESC [ K).
// Dropped, with everything they carry: OSC strings (ESC ] ... BEL or ST, such as OSC 8
// hyperlinks and window titles), DCS, SOS, PM and APC strings, every other escape or
// control sequence, and C0 control characters other than tab. Segments hold plain
// text; the caller puts them in the page with textContent.

export const PLAIN = Object.freeze({
  fg: null, bg: null, bold: false, dim: false, italic: false, underline: false,
  inverse: false, strike: false,
});

const CUBE = [0, 95, 135, 175, 215, 255];

// The colour of a 256-colour index as "rgb(r, g, b)"; indexes below 16 stay numbers,
// because the page's theme defines those.
function colour256(index) {
  if (index < 16) return index;
  if (index < 232) {
    const value = index - 16;
    return `rgb(${CUBE[Math.floor(value / 36)]}, ${CUBE[Math.floor(value / 6) % 6]}, ${CUBE[value % 6]})`;
  }
  const grey = 8 + 10 * (index - 232);
  return `rgb(${grey}, ${grey}, ${grey})`;
}

function clampByte(value) {
  return Math.max(0, Math.min(255, Number(value) || 0));
}

// Apply one SGR parameter list ("1;31", "38;5;208", "") to a style; returns a new style.
export function applySgr(style, paramText) {
  const params = paramText === "" ? [0] : paramText.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  const next = { ...style };
  for (let i = 0; i < params.length; i += 1) {
    const p = params[i];
    if (p === 0) Object.assign(next, PLAIN);
    else if (p === 1) next.bold = true;
    else if (p === 2) next.dim = true;
    else if (p === 3) next.italic = true;
    else if (p === 4) next.underline = true;
    else if (p === 7) next.inverse = true;
    else if (p === 9) next.strike = true;
    else if (p === 22) { next.bold = false; next.dim = false; }
    else if (p === 23) next.italic = false;
    else if (p === 24) next.underline = false;
    else if (p === 27) next.inverse = false;
    else if (p === 29) next.strike = false;
    else if (p >= 30 && p <= 37) next.fg = p - 30;
    else if (p >= 90 && p <= 97) next.fg = p - 90 + 8;
    else if (p >= 40 && p <= 47) next.bg = p - 40;
    else if (p >= 100 && p <= 107) next.bg = p - 100 + 8;
    else if (p === 39) next.fg = null;
    else if (p === 49) next.bg = null;
    else if (p === 38 || p === 48) {
      const key = p === 38 ? "fg" : "bg";
      if (params[i + 1] === 5 && i + 2 < params.length) {
        next[key] = colour256(clampByte(params[i + 2]));
        i += 2;
      } else if (params[i + 1] === 2 && i + 4 < params.length) {
        next[key] = `rgb(${clampByte(params[i + 2])}, ${clampByte(params[i + 3])}, ${clampByte(params[i + 4])})`;
        i += 4;
      } else {
        break; // malformed: ignore the rest, as terminals do
      }
    }
  }
  return Object.freeze(next);
}

// Split text into tokens: {text}, {sgr}, {cr}, {bs}, {erase}.
function tokenize(text) {
  const tokens = [];
  let plain = "";
  const flush = () => {
    if (plain) tokens.push({ text: plain });
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const code = ch.charCodeAt(0);
    if (code >= 0x20 && code !== 0x7f && !(code >= 0x80 && code <= 0x9f)) {
      plain += ch;
      i += 1;
      continue;
    }
    if (ch === "\t") { plain += ch; i += 1; continue; }
    flush();
    if (ch === "\r") { tokens.push({ cr: true }); i += 1; continue; }
    if (ch === "\b") { tokens.push({ bs: true }); i += 1; continue; }
    let introducer = null;
    let start = i + 1;
    if (ch === "\x1b") {
      introducer = text[i + 1];
      start = i + 2;
    } else if (code === 0x9b) introducer = "[";
    else if (code === 0x9d) introducer = "]";
    else if (code === 0x90) introducer = "P";
    else if (code === 0x98 || code === 0x9e || code === 0x9f) introducer = "_";
    if (introducer === "[") {
      let j = start;
      while (j < text.length && text.charCodeAt(j) >= 0x30 && text.charCodeAt(j) <= 0x3f) j += 1;
      const params = text.slice(start, j);
      while (j < text.length && text.charCodeAt(j) >= 0x20 && text.charCodeAt(j) <= 0x2f) j += 1;
      if (j >= text.length) break; // unterminated: drop the rest
      const final = text[j];
      if (final === "m" && /^[0-9;:]*$/.test(params)) tokens.push({ sgr: params });
      else if (final === "K" && /^[0-2]?$/.test(params)) tokens.push({ erase: Number(params || 0) });
      i = j + 1;
    } else if (introducer === "]" || introducer === "P" || introducer === "X"
               || introducer === "^" || introducer === "_") {
      // A string sequence: skip to BEL (OSC only) or ST (ESC \ or U+009C).
      let j = start;
      while (j < text.length) {
        const c = text[j];
        if ((c === "\x07" && introducer === "]") || c === "\x9c") { j += 1; break; }
        if (c === "\x1b" && text[j + 1] === "\\") { j += 2; break; }
        j += 1;
      }
      i = j;
    } else if (ch === "\x1b" && introducer !== undefined) {
      // ESC with one final character, or a character-set designation with one more.
      i = "()*+-./#%".includes(introducer) ? i + 3 : i + 2;
    } else {
      i += 1; // another control character: dropped
    }
  }
  flush();
  return tokens;
}

// Render one line (without its newline) starting in `style`; returns the segments
// [{text, style}] and the style at the line's end.
export function renderLine(text, style = PLAIN) {
  if (text.endsWith("\r")) text = text.slice(0, -1);
  if (!/[\x00-\x08\x0a-\x1f\x7f-\x9f]/.test(text)) {
    return { segments: text ? [{ text, style }] : [], style };
  }
  const tokens = tokenize(text);
  const cursorMoves = tokens.some((token) => token.cr || token.bs || token.erase !== undefined);
  let current = style;
  if (!cursorMoves) {
    const segments = [];
    for (const token of tokens) {
      if (token.sgr !== undefined) current = applySgr(current, token.sgr);
      else if (token.text) pushSegment(segments, token.text, current);
    }
    return { segments, style: current };
  }
  // Terminal mode: a row of cells that later text overwrites.
  const chars = [];
  const styles = [];
  let column = 0;
  for (const token of tokens) {
    if (token.sgr !== undefined) current = applySgr(current, token.sgr);
    else if (token.cr) column = 0;
    else if (token.bs) column = Math.max(0, column - 1);
    else if (token.erase !== undefined) {
      if (token.erase === 0) { chars.length = column; styles.length = column; }
      else if (token.erase === 1) for (let c = 0; c <= column && c < chars.length; c += 1) { chars[c] = " "; styles[c] = current; }
      else { chars.length = 0; styles.length = 0; }
    } else {
      for (const ch of token.text) {
        while (chars.length < column) { chars.push(" "); styles.push(PLAIN); }
        chars[column] = ch;
        styles[column] = current;
        column += 1;
      }
    }
  }
  const segments = [];
  for (let c = 0; c < chars.length; c += 1) pushSegment(segments, chars[c], styles[c]);
  return { segments, style: current };
}

function pushSegment(segments, text, style) {
  const last = segments[segments.length - 1];
  if (last && last.style === style) last.text += text;
  else segments.push({ text, style });
}

// The style in effect after a line, without building its segments.
export function styleAfter(text, style) {
  if (!text.includes("\x1b") && !text.includes("\x9b")) return style;
  let current = style;
  for (const token of tokenize(text)) if (token.sgr !== undefined) current = applySgr(current, token.sgr);
  return current;
}

// Strip escape sequences for searching; keeps newlines so line numbers still match.
export function plainText(text) {
  return text.replace(/\x1b\[[0-9;:?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]/g, "");
}
