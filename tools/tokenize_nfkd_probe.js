// Prints, for NFD and NFKD as HF tokenizers applies them, every code point that changes and its result.
const t = require('tokenizers');
for (const [name, n] of [['NFD', t.nfdNormalizer()], ['NFKD', t.nfkdNormalizer()]]) {
  const out = [];
  for (let c = 0xA0; c <= 0x10FFFF; c++) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    const s = String.fromCodePoint(c);
    const r = n.normalizeString(s);
    if (r !== s) out.push(c.toString(16) + ':' + Array.from(r).map((x) => x.codePointAt(0).toString(16)).join('.'));
  }
  console.log(name + ' ' + out.join(' '));
}
