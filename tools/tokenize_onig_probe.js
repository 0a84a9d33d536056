// Probes Oniguruma's general categories as HF tokenizers' Split regexes see them: for each class
// given (L N P S M), the code points that Split(Regex "\p{X}", Removed) drops, as ranges.
const { Tokenizer } = require('tokenizers');
const classes = process.argv.slice(2);
for (const cls of classes) {
  const json = JSON.stringify({ version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: { type: 'Split', pattern: { Regex: '\\p{' + cls + '}' }, behavior: 'Removed', invert: false },
    post_processor: null, decoder: null, model: { type: 'WordLevel', vocab: { '[UNK]': 0 }, unk_token: '[UNK]' } });
  const pre = Tokenizer.fromString(json).getPreTokenizer();
  const r = [];
  for (let c = 0; c <= 0x10FFFF; c++) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    if (pre.preTokenizeString(String.fromCodePoint(c)).length === 0) {
      if (r.length && r[r.length - 1][1] === c - 1) r[r.length - 1][1] = c; else r.push([c, c]);
    }
  }
  console.log(cls, r.map((x) => x[0].toString(16) + '-' + x[1].toString(16)).join(' '));
}
