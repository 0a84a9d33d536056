// The reference side of the tokenizer comparison: HuggingFace tokenizers 0.23.2 (npm) run over
// the comparison set. Writes one line of hashes per input so that tok_compare can check ours
// without shipping hundreds of MB between the two; `dump` gives the full results for a few lines.
//   node hf_reference.js all SEED FUZZ_PER_TOKENIZER SHAKESPEARE OUTDIR TOKENIZER.json...
//     writes OUTDIR/<name>.inputs.jsonl (all of Shakespeare in 8-line strings, then this tokenizer's own slice
//     of the seeded fuzz set) and OUTDIR/<name>.ref, or OUTDIR/<name>.loaderr when HF refuses
//     the file
//   node hf_reference.js dump TOKENIZER.json INPUTS.jsonl LINE...
//   node hf_reference.js bench-inputs SEED COUNT SHAKESPEARE OUTDIR   (tools/bench tokenizers)
//   node hf_reference.js bench TOKENIZER.json INPUTS.jsonl            (prints MB/s, best of 3)
'use strict';
const fs = require('fs');

// ---- the fuzz set ------------------------------------------------------------------------------

function mulberry32(seed) {
  return function () {
    seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function generate(seed, count) {
  const rnd = mulberry32(seed);
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
  const cp = (lo, hi) => String.fromCodePoint(int(lo, hi));
  const words = ['the', 'The', 'HELLO', 'world', 'tokenizer', 'naïve', 'café', 'straße', 'İstanbul', 'ŉ', 'ǅ',
    'unbelievable', 'a', 'I', 'x', 'ABCdef', 'don', 'won', 'can', 'Hello', 'über', 'ﬁne', 'Ǳ', 'ﬀ'];
  const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't", "'S", "'T", "'RE", "'LL", "’s", "'"];
  const spaces = [' ', ' ', ' ', '  ', '   ', '\t', '\n', '\r\n', '\r', '\n\n', '\u00a0', '\u3000', '\u2009',
    '\u200b', '\u180e', '\u0085', '\u2028', '\u202f', ' \n ', '\u000b', '\u000c', '\ufeff'];
  const punct = ['.', ',', '!', '?', ';', ':', '-', '--', '...', '(', ')', '[', ']', '{', '}', '"', "'", '`', '@',
    '#', '$', '%', '^', '&', '*', '_', '+', '=', '<', '>', '/', '\\', '|', '~', '«', '»', '“', '”', '—', '…', '¿',
    '¡', '·', '、', '。', '！', '？'];
  const specials = ['<s>', '</s>', '<unk>', '<pad>', '<mask>', '[CLS]', '[SEP]', '[MASK]', '[UNK]', '[PAD]',
    '<|endoftext|>', '<|startoftext|>', '<|begin_of_text|>', '<|end|>', '<|system|>', '<|assistant|>',
    '<|user|>', '>>TITLE<<', '<extra_id_0>', '<0x41>', '▁', '▁▁', 'Ġ', '##', '</w>', '<|placeholder2|>',
    ' <mask> ', ' </s> ', '<s> ', '  <|end|>  '];
  const emoji = ['😀', '👍🏽', '👨‍👩‍👧‍👦', '🇫🇷', '❤️', '✈︎', '🥰', '🫠', '🧑🏿‍🚀', '☕', '🏳️‍🌈', '1️⃣', '🪿'];
  const scripts = [
    () => cp(0x00C0, 0x024F), () => cp(0x0370, 0x03FF), () => cp(0x0400, 0x04FF), () => cp(0x0590, 0x05FF),
    () => cp(0x0600, 0x06FF), () => cp(0x0900, 0x097F), () => cp(0x0E00, 0x0E7F), () => cp(0x4E00, 0x9FFF),
    () => cp(0x3040, 0x30FF), () => cp(0xAC00, 0xD7A3), () => cp(0x1100, 0x11FF), () => cp(0xFF61, 0xFF9F),
    () => cp(0xFF01, 0xFF5E), () => cp(0x1E00, 0x1EFF), () => cp(0x10A0, 0x10FF), () => cp(0x0530, 0x058F),
    () => cp(0x20000, 0x2A6DF), () => cp(0x1D400, 0x1D7FF), () => cp(0x2460, 0x24FF), () => cp(0x3300, 0x33FF),
  ];
  const combining = () => cp(0x0300, 0x036F);
  const control = () => String.fromCodePoint(pick([int(0, 0x1f), int(0x7f, 0x9f), 0xfffd, 0x200d, 0x200c, 0x2060, 0xad]));
  const anyCp = () => {
    for (;;) {
      const c = rnd() < 0.7 ? int(0x80, 0xFFFF) : int(0x10000, 0x10FFFF);
      if (c < 0xD800 || c > 0xDFFF) return String.fromCodePoint(c);
    }
  };
  const digits = () => { let s = ''; const n = int(1, 12); for (let i = 0; i < n; i++) s += String(int(0, 9)); return s; };
  const piece = () => {
    const r = rnd();
    if (r < 0.20) return pick(words);
    if (r < 0.27) return pick(contractions);
    if (r < 0.42) return pick(spaces);
    if (r < 0.50) return pick(punct);
    if (r < 0.56) return digits();
    if (r < 0.61) return pick(specials);
    if (r < 0.66) return pick(emoji);
    if (r < 0.78) { let s = ''; const n = int(1, 6); for (let i = 0; i < n; i++) s += pick(scripts)(); return s; }
    if (r < 0.84) return (rnd() < 0.6 ? pick(words).slice(0, 1) : '') + combining() + (rnd() < 0.3 ? combining() : '');
    if (r < 0.89) return control();
    if (r < 0.95) return anyCp();
    return String.fromCodePoint(int(0x20, 0x7e));
  };
  const out = [];
  for (let i = 0; i < count; i++) {
    let s = '';
    const n = int(1, 14);
    for (let k = 0; k < n; k++) s += piece();
    out.push(s);
  }
  return out;
}

// ---- hashing ---------------------------------------------------------------------------------------

// FNV-1a 32 over UTF-8 bytes; tok_compare computes the same.
function fnv(str) {
  const b = Buffer.from(str, 'utf8');
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) { h ^= b[i]; h = Math.imul(h, 0x01000193); }
  return (h >>> 0).toString(16).padStart(8, '0');
}
const serOffsets = (o) => o.map((p) => p[0] + '-' + p[1]).join(',');

function readInputs(path) {
  return fs.readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
}

// ---- running the reference -------------------------------------------------------------------------------

async function run(tok, inputs, outPath) {
  tok.disableTruncation();
  tok.disablePadding();
  const lines = [];
  const CH = 2000;
  // Pass 1: every input alone: ids, tokens, offsets, decode with and without special tokens.
  for (let b = 0; b < inputs.length; b += CH) {
    const chunk = inputs.slice(b, b + CH);
    const encs = await tok.encodeBatch(chunk);
    const ids = encs.map((e) => e.getIds());
    const dec = await tok.decodeBatch(ids, false);
    const decSkip = await tok.decodeBatch(ids, true);
    for (let i = 0; i < encs.length; i++) {
      const e = encs[i];
      lines.push([fnv(ids[i].join(',')), fnv(e.getTokens().join('\u0001')), fnv(serOffsets(e.getOffsets())),
        fnv(dec[i]), fnv(decSkip[i])].join(' '));
    }
  }
  // Pass 2: pairs (input i with input i+1) with truncation, and batches of 8 with truncation and
  // padding, right then left; the last 1001 inputs (fuzz strings).
  const base = Math.max(0, inputs.length - 1001);
  const n2 = Math.min(inputs.length - 1 - base, 1000);
  const pairLines = [];
  tok.setTruncation(24, { strategy: 'LongestFirst' });
  for (let b = 0; b < n2; b += 200) {
    const jobs = [];
    for (let i = b; i < Math.min(n2, b + 200); i++) jobs.push(tok.encode(inputs[base + i], inputs[base + i + 1]));
    for (const e of await Promise.all(jobs)) pairLines.push('P ' + [fnv(e.getIds().join(',')), fnv(e.getTypeIds().join(',')), fnv(serOffsets(e.getOffsets()))].join(' '));
  }
  const batchLines = [];
  const modes = [
    { trunc: [12, { direction: 'right' }], pad: { padId: 7, padToken: '[PAD]', direction: 'right' } },
    { trunc: [10, { direction: 'left' }], pad: { padId: 3, padTypeId: 1, padToken: '<pad>', direction: 'left', maxLength: 16, padToMultipleOf: 8 } },
  ];
  for (const m of modes) {
    tok.setTruncation(m.trunc[0], m.trunc[1]);
    tok.setPadding(m.pad);
    for (let b = 0; b + 8 <= n2; b += 8) {
      const encs = await tok.encodeBatch(inputs.slice(base + b, base + b + 8));
      batchLines.push('B ' + encs.map((e) => fnv(e.getIds().join(',') + '|' + e.getAttentionMask().join(',') + '|' + e.getTypeIds().join(','))).join(' '));
    }
  }
  fs.writeFileSync(outPath, lines.concat(pairLines, batchLines).join('\n') + '\n');
}

async function dump(tokPath, inputsPath, which) {
  const { Tokenizer } = require('tokenizers');
  const tok = Tokenizer.fromFile(tokPath);
  tok.disableTruncation();
  tok.disablePadding();
  const inputs = readInputs(inputsPath);
  for (const w of which) {
    const e = await tok.encode(inputs[w]);
    const ids = e.getIds();
    console.log(JSON.stringify({ line: w, input: inputs[w], ids, tokens: e.getTokens(), offsets: e.getOffsets(),
      decode: await tok.decode(ids, false), decode_skip: await tok.decode(ids, true) }));
  }
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === 'all') {
    const [seed, perTok, shakespeare, outDir, ...toks] = args;
    const { Tokenizer } = require('tokenizers');
    // The whole play text in chunks of 8 lines (newlines inside), for every tokenizer.
    const all = fs.readFileSync(shakespeare, 'utf8').split('\n');
    const lines = [];
    for (let i = 0; i < all.length; i += 8) lines.push(all.slice(i, i + 8).join('\n'));
    const per = Number(perTok);
    const fuzz = generate(Number(seed), per * toks.length);
    for (let k = 0; k < toks.length; k++) {
      const name = require('path').basename(toks[k], '.json');
      const inputs = lines.concat(fuzz.slice(k * per, (k + 1) * per));
      fs.writeFileSync(`${outDir}/${name}.inputs.jsonl`, inputs.map((s) => JSON.stringify(s)).join('\n') + '\n');
      let tok;
      try {
        tok = Tokenizer.fromFile(toks[k]);
      } catch (e) {
        fs.writeFileSync(`${outDir}/${name}.loaderr`, String(e && e.message || e) + '\n');
        continue;
      }
      await run(tok, inputs, `${outDir}/${name}.ref`);
    }
  } else if (mode === 'bench-inputs') {
    const [seed, count, shakespeare, outDir] = args;
    const lines = fs.readFileSync(shakespeare, 'utf8').split('\n').filter((l) => l.length > 0);
    fs.writeFileSync(`${outDir}/shakespeare.jsonl`, lines.map((s) => JSON.stringify(s)).join('\n') + '\n');
    const fuzz = generate(Number(seed) + 1, Number(count));
    fs.writeFileSync(`${outDir}/fuzz.jsonl`, fuzz.map((s) => JSON.stringify(s)).join('\n') + '\n');
  } else if (mode === 'bench') {
    const { Tokenizer } = require('tokenizers');
    const tok = Tokenizer.fromFile(args[0]);
    tok.disableTruncation();
    tok.disablePadding();
    const inputs = readInputs(args[1]);
    const bytes = inputs.reduce((n, s) => n + Buffer.byteLength(s, 'utf8'), 0);
    let best = Infinity;
    for (let r = 0; r < 3; r++) {
      const t0 = process.hrtime.bigint();
      const encs = await tok.encodeBatch(inputs);
      // The ids and masks as JS arrays, as ours returns Lua lists.
      for (const e of encs) { e.getIds(); e.getAttentionMask(); }
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    console.log((bytes / best / 1e6).toFixed(3));
  } else if (mode === 'dump') {
    await dump(args[0], args[1], args.slice(2).map(Number));
  } else {
    console.error('usage: hf_reference.js gen|run|dump ...');
    process.exit(2);
  }
}
main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
