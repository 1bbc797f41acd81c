#!/usr/bin/env bash
# A local certificate authority and certificates for TLS / mTLS between the services, for tests and the demo.
#
#   deploy/local/certs.sh [--out DIR] [--days N] [--names NAMES] [--ca-name CN] [--force]
#
#   --out DIR      where the files go                                         (default <repo>/var/tls)
#   --days N       validity of the certificates                               (default 825)
#   --names NAMES  extra server names, comma separated (DNS names or IPs); localhost and 127.0.0.1 are always in
#   --ca-name CN   common name of the CA                                      (default "recsys local CA")
#   --force        replace existing files (otherwise an existing CA and certificates are kept)
#
# Writes (keys are PKCS#8 PEM, mode 0600, EC P-256):
#   ca.crt ca.key              the CA (RECSYS_TLS_CA, RECSYS_KAFKA_SSL_CAFILE)
#   server.crt server.key      serverAuth + clientAuth, SANs localhost, 127.0.0.1 and NAMES: what every service
#                              presents (RECSYS_TLS_CERT / RECSYS_TLS_KEY), as server and as mTLS client
#   client.crt client.key      clientAuth only, CN recsys-client: a client of the public surface or of a service
#   server-keystore.pem        server.key + server.crt in one file (a Kafka PEM keystore)
#
# Use it, e.g.: RECSYS_TLS_CERT=var/tls/server.crt RECSYS_TLS_KEY=var/tls/server.key RECSYS_TLS_CA=var/tls/ca.crt
# RECSYS_TLS_CLIENT_AUTH=require. Calling a second time with another --out makes an unrelated CA (the tests use one
# to check that a certificate from another CA is refused).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="$REPO/var/tls"
DAYS=825
NAMES=""
CA_NAME="recsys local CA"
FORCE=0

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --days) DAYS="$2"; shift 2 ;;
    --names) NAMES="$2"; shift 2 ;;
    --ca-name) CA_NAME="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage ;;
    *) echo "certs.sh: unknown argument $1" >&2; usage ;;
  esac
done

command -v openssl >/dev/null || { echo "certs.sh: openssl is needed" >&2; exit 1; }
[[ "$DAYS" =~ ^[0-9]+$ ]] || { echo "certs.sh: --days must be a number" >&2; exit 2; }
mkdir -p "$OUT"
chmod 700 "$OUT"
umask 077
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# Subject alternative names: localhost, 127.0.0.1, ::1 and --names.
san="DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1"
IFS=',' read -r -a extra <<<"$NAMES"
for name in "${extra[@]}"; do
  name="$(echo "$name" | tr -d '[:space:]')"
  [[ -n "$name" ]] || continue
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then san="$san,IP:$name"; else san="$san,DNS:$name"; fi
done

if [[ $FORCE -eq 1 || ! -s "$OUT/ca.crt" || ! -s "$OUT/ca.key" ]]; then
  new_key "$OUT/ca.key"
  openssl req -x509 -new -key "$OUT/ca.key" -sha256 -days "$DAYS" -subj "/O=recsys/CN=$CA_NAME" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$OUT/ca.crt"
  rm -f "$OUT/server.crt" "$OUT/client.crt"  # a new CA: re-issue everything
fi

ISSUED=()
KEPT=()
# issue NAME CN EXTENDED_KEY_USAGE [SAN]
issue() {
  local name="$1" cn="$2" eku="$3" alt="${4:-}"
  if [[ $FORCE -eq 0 && -s "$OUT/$name.crt" && -s "$OUT/$name.key" ]]; then KEPT+=("$name"); return 0; fi
  ISSUED+=("$name")
  new_key "$OUT/$name.key"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
    [[ -n "$alt" ]] && echo "subjectAltName=$alt"
  } >"$WORK/$name.ext"
  openssl req -new -key "$OUT/$name.key" -subj "/O=recsys/CN=$cn" -out "$WORK/$name.csr"
  openssl x509 -req -in "$WORK/$name.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial \
    -CAserial "$WORK/ca.srl" -days "$DAYS" -sha256 -extfile "$WORK/$name.ext" -out "$OUT/$name.crt" 2>/dev/null
}

issue server recsys-service "serverAuth,clientAuth" "$san"
issue client recsys-client "clientAuth"
cat "$OUT/server.key" "$OUT/server.crt" >"$OUT/server-keystore.pem"
chmod 600 "$OUT"/*.key "$OUT/server-keystore.pem"
chmod 644 "$OUT"/*.crt
openssl verify -CAfile "$OUT/ca.crt" "$OUT/server.crt" "$OUT/client.crt" >/dev/null
names="${san//DNS:/}"
echo "certs: $OUT: issued [${ISSUED[*]:-}] kept [${KEPT[*]:-}] (use --force to re-issue);" \
  "server names of new certificates: ${names//IP:/}"
