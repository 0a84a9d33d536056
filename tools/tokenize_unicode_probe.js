// Probes HF tokenizers' Unicode predicates over every code point and prints the ranges each
// accepts (punctuation as BertPreTokenizer splits it, "other" as BertNormalizer's clean_text drops
// it, Mn as strip_accents drops it); src/tokenize/unicode_hf_tables.hpp is made from its output.
const t = require('tokenizers');
const punct = t.punctuationPreTokenizer();
const clean = t.bertNormalizer({ cleanText: true, handleChineseChars: false, stripAccents: false, lowercase: false });
const strip = t.bertNormalizer({ cleanText: false, handleChineseChars: false, stripAccents: true, lowercase: false });
const nfd = t.nfdNormalizer();
const lower = t.lowercase();
const ranges = { punct: [], other: [], mn: [], ws: [] };
const add = (k, c) => { const r = ranges[k]; if (r.length && r[r.length - 1][1] === c - 1) r[r.length - 1][1] = c; else r.push([c, c]); };
for (let c = 0; c <= 0x10FFFF; c++) {
  if (c >= 0xD800 && c <= 0xDFFF) continue;
  const s = String.fromCodePoint(c);
  if (punct.preTokenizeString('a' + s + 'a').length === 3) add('punct', c);
  const cl = clean.normalizeString(s);
  if (cl === '') add('other', c);
  else if (cl === ' ' && s !== ' ') add('ws', c);
  // Mn: stripping removes c itself when NFD(c) == c
  if (nfd.normalizeString(s) === s && strip.normalizeString('a' + s) === 'a') add('mn', c);
}
for (const k of Object.keys(ranges)) console.log(k, ranges[k].length, JSON.stringify(ranges[k].map(r => r[0] === r[1] ? r[0].toString(16) : r[0].toString(16) + '-' + r[1].toString(16))));
