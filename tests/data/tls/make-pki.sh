#!/usr/bin/env bash
# Regenerates the test-only PKI used by the integration tests and the bench (TLS origin,
# curl --cacert). Run from anywhere: ./make-pki.sh [OUTDIR] (default: this folder).
# Needs only the openssl CLI. The keys are NOT secret: they exist for tests on 127.0.0.1.
set -euo pipefail
out=${1:-$(cd "$(dirname "$0")" && pwd)}
mkdir -p "$out"
cd "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

days=7300   # 20 years: the committed files must outlive the project's CI
names="DNS:api.example.test,DNS:localhost,IP:127.0.0.1"

key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null
        openssl pkcs8 -topk8 -nocrypt -in "$1.key" -out "$1.key.p8" && mv "$1.key.p8" "$1.key"; }

# Test CA.
key ca
openssl req -new -x509 -key ca.key -out ca.pem -days $days -sha256 \
    -subj "/CN=airlock test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"

# leaf NAME CN SAN DAYS_SPEC: a server certificate signed by the test CA.
leaf() {
    local n=$1 cn=$2 san=$3
    shift 3
    key "$n"
    openssl req -new -key "$n.key" -out "$tmp/$n.csr" -subj "/CN=$cn"
    cat > "$tmp/$n.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
authorityKeyIdentifier=keyid
EXT
    openssl x509 -req -in "$tmp/$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -CAserial "$tmp/ca.srl" -out "$n.pem" -sha256 -extfile "$tmp/$n.ext" "$@" 2>/dev/null
}

leaf server api.example.test "$names" -days $days
leaf wrongname other.example.test "DNS:other.example.test" -days $days
# Expired: valid from 2001 to 2002. x509 -req has no start date option in OpenSSL 3.0,
# so the expired certificate is made with `openssl ca` and explicit dates.
key expired
openssl req -new -key expired.key -out "$tmp/expired.csr" -subj "/CN=api.example.test"
mkdir -p "$tmp/ca/newcerts"; : > "$tmp/ca/index.txt"; echo 1000 > "$tmp/ca/serial"
cat > "$tmp/ca.cnf" <<CNF
[ ca ]
default_ca = test
[ test ]
dir = $tmp/ca
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = ext
[ any ]
commonName = supplied
[ ext ]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$names
CNF
openssl ca -batch -config "$tmp/ca.cnf" -cert ca.pem -keyfile ca.key -in "$tmp/expired.csr" \
    -out expired.pem -startdate 20010101000000Z -enddate 20020101000000Z -notext 2>/dev/null

# Unknown CA: self-signed for the same names, trusted by nobody.
key unknown
openssl req -new -x509 -key unknown.key -out unknown.pem -days $days -sha256 \
    -subj "/CN=api.example.test" -addext "subjectAltName=$names" \
    -addext "basicConstraints=critical,CA:FALSE"

chmod 0644 ./*.pem ./*.key
echo "test PKI written to $out"
