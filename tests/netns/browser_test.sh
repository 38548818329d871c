#!/usr/bin/env bash
# A real browser on partitioned content (issue 12): headless Chromium in the client
# namespace loads /index.html from be1 ("pages"); its 12 images live only on be2
# ("images") and its script only on be3 ("assets"). Chromium fetches the images on the
# keep-alive connection that brought the page (and on up to 5 more per host), so every
# image decodes only when every request of a connection is routed, not just its first.
# The page itself reports, after window.onload, how many images decoded at their
# expected size and whether the script ran; the BEs' counters say who served what.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd chromium python3 jq timeout
tb_require_tcpha
tb_init 3
tb_key

N_IMG=12
WWW=$TB_DIR/www
mkdir -p "$WWW"/be1 "$WWW"/be2/img "$WWW"/be3/js

# Valid PNGs of distinct sizes and colours (zlib + struct, no imaging library): image
# i is (16 + 16 i) x (12 + 12 i), a colour per image with deterministic noise so the
# files do not compress to nothing (about 1 KB to 100 KB). The page lists each image
# with the width it must decode to.
python3 - "$WWW" "$N_IMG" <<'EOF'
import struct, sys, zlib
www, n = sys.argv[1], int(sys.argv[2])

def chunk(kind, data):
    return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))

imgs = []
for i in range(1, n + 1):
    w, h = 16 + 16 * i, 12 + 12 * i
    base = ((37 * i) % 256, (91 * i + 40) % 256, (173 * i + 80) % 256)
    x = i
    rows = bytearray()
    for y in range(h):
        rows.append(0)  # filter: none
        for _ in range(w):
            x = (1103515245 * x + 12345) & 0x7FFFFFFF
            rows += bytes((c + ((x >> s) & 31)) & 255 for c, s in zip(base, (3, 9, 15)))
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack("!IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
           + chunk(b"IEND", b""))
    name = "i%02d.png" % i
    with open(f"{www}/be2/img/{name}", "wb") as f:
        f.write(png)
    imgs.append(f'<img src="/img/{name}" data-w="{w}" alt="{name}">')

with open(f"{www}/be1/index.html", "w") as f:
    f.write("""<!doctype html>
<html><head><meta charset="utf-8"><title>tcpha browser test</title></head>
<body>
<p>Pages on be1, images on be2, the script on be3.</p>
%s
<script src="/js/app.js"></script>
<pre id="result">RESULT pending</pre>
<script>
window.onload = function () {
  var bad = [], ok = 0, imgs = document.images;
  for (var i = 0; i < imgs.length; i++) {
    var im = imgs[i];
    if (im.complete && im.naturalWidth > 0 && im.naturalWidth == im.dataset.w) ok++;
    else bad.push(im.alt);
  }
  var ran = document.body.dataset.app === "ran" ? "yes" : "no";
  document.getElementById("result").textContent =
    "RESULT decoded=" + ok + "/" + imgs.length + " script=" + ran +
    " failed=" + (bad.join(",") || "-");
};
</script>
</body></html>
""" % "\n".join(imgs))
EOF
cat >"$WWW/be3/js/app.js" <<'EOF'
// Served by be3 only: marks the document so the page can tell that it ran.
document.body.dataset.app = "ran";
EOF

TB_BE_GROUPS=([1]='"pages"' [2]='"images"' [3]='"assets"')
TB_FE_EXTRA="access_log = \"$TB_DIR/access.log\""
TB_NO_DEFAULT_RULE=1
tb_config "$(
  cat <<'EOF'
[[rule]]
name = "images"
path = '^/img/'
group = "images"

[[rule]]
name = "assets"
path = '^/js/'
group = "assets"

[[rule]]
name = "pages"
group = "pages"
EOF
)"
for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

# A throw-away profile and HOME inside the bed; no first-run UI, no sync, no component
# updates or other background traffic (the client namespace has no route out anyway).
CHROME_HOME=$TB_DIR/chromium
mkdir -p "$CHROME_HOME/profile" "$CHROME_HOME/cache" "$CHROME_HOME/config"
url="http://$TB_VIP:$TB_PORT/index.html"
echo "== headless Chromium in the client namespace: $url"
t0=$(tb__now_ms)
rc=0
timeout -k 5 40 ip netns exec "$TB_NS_C" env HOME="$CHROME_HOME" \
  XDG_CONFIG_HOME="$CHROME_HOME/config" XDG_CACHE_HOME="$CHROME_HOME/cache" \
  chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --user-data-dir="$CHROME_HOME/profile" --no-first-run --no-default-browser-check \
  --disable-background-networking --disable-component-update --disable-sync \
  --disable-default-apps --disable-extensions --disable-breakpad --no-pings \
  --disable-domain-reliability --disable-client-side-phishing-detection \
  --metrics-recording-only --password-store=basic --no-proxy-server \
  --dump-dom --virtual-time-budget=10000 "$url" \
  </dev/null >"$TB_DIR/dom.html" 2>"$TB_DIR/chromium.log" || rc=$?
echo "chromium exited with status $rc after $(($(tb__now_ms) - t0)) ms"
if ((rc != 0)); then
  tail -n 30 "$TB_DIR/chromium.log" >&2
  tb_fail "chromium failed (status $rc; 124 = timed out)"
fi

result=$(grep -o '<pre id="result">[^<]*' "$TB_DIR/dom.html" || true)
result=${result#*>}
[[ -n $result ]] || {
  head -c 3000 "$TB_DIR/dom.html" >&2
  tb_fail "the dumped DOM has no RESULT line (the page did not load)"
}
echo "page says: $result"
[[ $result != "RESULT pending" ]] || tb_fail "window.onload never ran"

# Who served what: the FE's access log has each connection's first request (routed by
# the FE); the BEs' request counters have every request.
echo "FE access log (first request of each connection):"
sed 's/^/  /' "$TB_DIR/access.log" 2>/dev/null || true
declare -A req=() moved_out=() moved_in=()
for k in 1 2 3; do
  js=$(tb_status_json "be$k") || tb_fail "tcpha status on be$k failed"
  req[$k]=$(jq -e '.counters.requests' <<<"$js") || tb_fail "be$k status has no counters.requests"
  moved_out[$k]=$(jq -r '.counters.moved_out // "missing"' <<<"$js")
  moved_in[$k]=$(jq -r '.counters.moved_in // "missing"' <<<"$js")
  echo "be$k: ${req[$k]} requests, moved out ${moved_out[$k]}, moved in ${moved_in[$k]}"
done
fe_js=$(tb_status_json fe) || tb_fail "tcpha status on the FE failed"
repoints=$(jq -r '.counters.repoints // "missing"' <<<"$fe_js")
echo "FE: handoffs ok $(jq -r '.handoffs.ok' <<<"$fe_js"), failed $(jq -r '.handoffs.failed' <<<"$fe_js"), repoints $repoints"

[[ $result =~ ^RESULT\ decoded=([0-9]+)/([0-9]+)\ script=(yes|no) ]] ||
  tb_fail "malformed result line '$result'"
decoded=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]} script=${BASH_REMATCH[3]}
((total == N_IMG)) || tb_fail "the page has $total images, want $N_IMG"
((decoded == N_IMG)) || tb_fail "$decoded of $N_IMG images decoded ($result)"
[[ $script == yes ]] || tb_fail "the script from be3 did not run ($result)"
((req[2] >= N_IMG)) || tb_fail "be2 (images) answered ${req[2]} requests, want >= $N_IMG"
((req[3] >= 1)) || tb_fail "be3 (assets) answered no request"
((req[1] >= 1)) || tb_fail "be1 (pages) answered no request"
# Chromium reuses the page's connection for images, so at least one connection moved
# from BE to BE, arrived, and the FE repointed its flow.
[[ "${moved_out[*]} ${moved_in[*]} $repoints" != *missing* ]] ||
  tb_fail "no counters.moved_out/moved_in on the BEs or counters.repoints on the FE"
n_out=$((moved_out[1] + moved_out[2] + moved_out[3])) n_in=$((moved_in[1] + moved_in[2] + moved_in[3]))
((n_out > 0)) || tb_fail "no connection moved between BEs (counters.moved_out summed: 0)"
((n_in > 0)) || tb_fail "the BEs moved $n_out connections out but none in (counters.moved_in summed: 0)"
((repoints > 0)) || tb_fail "the BEs moved $n_out connections but the FE repointed none"
jq -e '.handoffs.failed == 0' <<<"$fe_js" >/dev/null || tb_fail "failed handoffs: $(jq -c .handoffs <<<"$fe_js")"

echo "PASS: browser"
