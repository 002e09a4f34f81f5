#!/bin/sh
# Creates the Secrets the manifests reference, with fresh random values, in
# namespace $1. Nothing here is committed anywhere: the values exist only in
# the cluster (and in the backup docs/deploy.md asks for). Existing Secrets
# are left alone, so running it again never rotates a key by accident.
#
#   deploy/k8s/create-secrets.sh shequ
#
# Needs kubectl, openssl and a `shequ` command (for the disclosure key:
# `pip install .` or the image: `docker run --rm --entrypoint shequ IMAGE disclosure keygen`).
set -eu
ns=${1:?usage: create-secrets.sh NAMESPACE}
kc="kubectl -n $ns"

random() { openssl rand -hex 24; }          # URL-safe: goes into connection URIs
random_b64() { openssl rand -base64 32; }   # 32-byte keys, base64

create() {  # create NAME KEY=VALUE...
    name=$1; shift
    if $kc get secret "$name" >/dev/null 2>&1; then
        echo "kept    secret/$name (exists)"
        return
    fi
    args=""
    for pair in "$@"; do args="$args --from-literal=$pair"; done
    # shellcheck disable=SC2086 # word splitting of $args is intended
    $kc create secret generic "$name" $args >/dev/null
    echo "created secret/$name"
}

create shequ-platform jwt-secret="$(random)" cursor-secret="$(random)"
# Bureau machine clients' API keys: none at install; add entries from `shequ bureau key`.
create shequ-bureau-api-keys api-keys='[]'
# The install job's broker account, and one per service (deploy/k8s/base/broker-accounts.yaml).
create shequ-rabbitmq-init username=shequ-init password="$(random)"
for service in grid notify disclosure mediation volunteer; do
    create "shequ-rabbitmq-$service" username="shequ-$service" password="$(random)"
done
keda_password=$(random)
create shequ-keda-rabbitmq username=shequ-keda password="$keda_password" \
    host="http://shequ-keda:$keda_password@shequ-rabbitmq.$ns.svc:15672/shequ"
for user in grid notify disclosure mediation volunteer init auditor admin; do
    create "shequ-mongodb-$user-password" password="$(random)"
done
signing_key=$(shequ disclosure keygen | python3 -c 'import json,sys; print(json.load(sys.stdin)["private_key"])')
create shequ-disclosure signing-key="$signing_key"
create shequ-mediation keys="k1:$(random_b64)" active-key=k1 index-key="$(random_b64)"
create shequ-volunteer-keys keys="k1:$(random_b64)" active-key=k1
create shequ-notify-keys keys="k1:$(random_b64)" active-key=k1
# Channel credentials are the district's own: add them when the channels are set up,
#   kubectl -n NS create secret generic shequ-notify --from-literal=smtp-password=...
echo "done: back up shequ-disclosure, shequ-mediation, shequ-volunteer-keys and shequ-notify-keys now (docs/deploy.md, Backup)"
