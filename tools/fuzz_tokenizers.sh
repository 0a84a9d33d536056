#!/usr/bin/env bash
# tools/fuzz_tokenizers.sh [SECONDS]: builds the tokenizer's libFuzzer targets with clang (ASan +
# UBSan) under build/fuzz-tokenize and runs each for SECONDS (default 240):
#   fuzz_tokenizer_load   any bytes as tokenizer.json (seeds: the files of ../shared/data/tokenizers
#                         cut down to 300 tokens, so mutations stay fast, and the deep-nesting seeds
#                         of tests/host/json_fuzz_seeds.lua)
#   fuzz_tokenizer_encode any bytes as text for 11 real tokenizers (seeds: fuzz-set strings)
# UBSan's pointer-overflow check is off: RapidJSON 1.1's Stack adds an offset to its null buffer on
# every first parse (inside the library, harmless), which would stop the run at once.
# Needs: apt-get install -y clang libclang-rt-14-dev
set -euo pipefail
secs=${1:-240}
root=$(cd "$(dirname "$0")/.." && pwd)
data=${SKYRUN_SHARED_DATA:-$root/../shared/data}
[[ -d $data ]] || data=/work/shared/data
out=$root/build/fuzz-tokenize
mkdir -p "$out/seeds_load" "$out/seeds_encode" "$out/corpus_load" "$out/corpus_encode"
src=$root/src/tokenize
core="$src/models.cpp $src/normalizers.cpp $src/pre_tokenizers.cpp $src/processors.cpp $src/text.cpp $src/tokenizer.cpp"
for t in load encode; do
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize=pointer-overflow \
    -fno-sanitize-recover=undefined -I"$root/src" "$src/fuzz_tokenizer_$t.cpp" $core -lpcre2-8 -lutf8proc \
    -o "$out/fuzz_tokenizer_$t"
done
python3 - "$data" "$out" <<'EOF'
import json, glob, os, sys
data, out = sys.argv[1], sys.argv[2]
for f in glob.glob(data + '/tokenizers/*.json'):
    if 'tokenizer_config' in f:
        continue
    try:
        j = json.load(open(f, encoding='utf8'))
    except Exception:
        continue
    m = j['model']
    v = m.get('vocab')
    if isinstance(v, dict):
        keep = {k: i for i, (k, _) in enumerate(sorted(v.items(), key=lambda kv: kv[1])[:300])}
        m['vocab'] = keep
        if isinstance(m.get('merges'), list):
            pre = m.get('continuing_subword_prefix') or ''
            ms = []
            for mg in m['merges']:
                a, b = mg.split(' ', 1) if isinstance(mg, str) else mg
                if a in keep and b in keep and a + b[len(pre):] in keep:
                    ms.append(mg)
            m['merges'] = ms[:200]
    elif isinstance(v, list):
        m['vocab'] = v[:300]
        if (m.get('unk_id') or 0) >= 300:
            m['unk_id'] = 0
    if (j.get('normalizer') or {}).get('type') == 'Precompiled':
        continue  # a 300 kB charsmap makes every mutation slow
    j['added_tokens'] = [a for a in j.get('added_tokens') or [] if a['id'] < 300][:10]
    json.dump(j, open(os.path.join(out, 'seeds_load', os.path.basename(f)), 'w', encoding='utf8'))
EOF
"$root/build/skyrun" "$root/tests/host/json_fuzz_seeds.lua" "$out/deep" >/dev/null &&
  cp "$out"/deep/tokenizer/* "$out/seeds_load/" || echo "no deep-nesting seeds (build skyrun first)" >&2
NODE_PATH=$root/build/tokenize-hf/node_modules node "$root/tests/tokenize/hf_reference.js" bench-inputs 7 300 \
  "$data/text/tinyshakespeare.txt" "$out" 2>/dev/null && python3 - "$out" <<'EOF' || true
import json, sys
out = sys.argv[1]
for i, l in enumerate(open(out + '/fuzz.jsonl', encoding='utf8').read().split('\n')[:300]):
    if l:
        open('%s/seeds_encode/s%03d' % (out, i), 'w', encoding='utf8').write(json.loads(l))
EOF
cd "$out"
./fuzz_tokenizer_load -max_total_time="$secs" -max_len=65536 -timeout=20 -rss_limit_mb=4096 corpus_load seeds_load 2>&1 | tail -n 3
SKYRUN_SHARED_DATA=$data ./fuzz_tokenizer_encode -max_total_time="$secs" -max_len=4096 -timeout=20 -rss_limit_mb=4096 \
  corpus_encode seeds_encode 2>&1 | tail -n 3
