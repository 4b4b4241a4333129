#!/usr/bin/env bash
# A local certificate authority for testing TLS (never for production):
#   scripts/make-test-ca.sh OUT_DIR [CLIENT_NAME ...]
# writes OUT_DIR/ca.crt ca.key, server.crt server.key (for 127.0.0.1 and localhost), and a
# CLIENT_NAME.crt / CLIENT_NAME.key pair per client name (CN = the name, usable with
# Mosquitto's require_certificate). Keys are written 0600. Needs openssl.
set -euo pipefail
out="${1:?usage: make-test-ca.sh OUT_DIR [CLIENT_NAME ...]}"
shift
days="${CA_DAYS:-30}"
mkdir -p "$out"
chmod 700 "$out"
cd "$out"
umask 077

if [ ! -f ca.key ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -sha256 \
    -keyout ca.key -out ca.crt -subj "/CN=CareWatch test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
fi

sign() {  # name, subject CN, extension file
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -sha256 -out "$1.crt" -extfile "$3" 2>/dev/null
  rm -f "$1.csr"
}

cat > server.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EXT
sign server localhost server.ext

cat > client.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT
for name in "$@"; do
  sign "$name" "$name" client.ext
done
rm -f server.ext client.ext
chmod 644 ca.crt ./*.crt
echo "test CA in $out: ca.crt, server.crt/key${*:+, clients: $*}"
