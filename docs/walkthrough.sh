#!/usr/bin/env bash
# The walk-through of docs/admin.md ("Walk-through: register, publish and call a service"), block
# by block, for a fresh `fenfa-admin serve --demo`. tests/admin/walkthrough.rs keeps it identical
# to the doc's blocks and runs it in CI; edit the doc and this file together.
set -euo pipefail

. "${FENFA_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/fenfa-admin}/demo.env"   # ADMIN_PW, SEC_PW, *_TOTP, CP, GW, ECHO_*, DEMO_TOKEN
login() { curl -sf "$CP/v1/auth/login" -H 'content-type: application/json' -d "$1" | jq -r .token; }
SYS=$(login "{\"username\":\"admin\",\"password\":\"$ADMIN_PW\",\"totp\":\"$(oathtool --totp -b "$ADMIN_TOTP")\"}")
SEC=$(login "{\"username\":\"security\",\"password\":\"$SEC_PW\",\"totp\":\"$(oathtool --totp -b "$SEC_TOTP")\"}")

AG=$(curl -sf "$CP/v1/agencies" -H "authorization: Bearer $SYS" -H 'content-type: application/json' \
  -d '{"name":"social","title":"人力资源和社会保障局","path_prefixes":["/social/"]}' | jq -r .id)
curl -sf "$CP/v1/users" -H "authorization: Bearer $SYS" -H 'content-type: application/json' \
  -d "{\"username\":\"social-op\",\"role\":\"agency-operator\",\"agency_id\":\"$AG\",\"password\":\"Pension-Desk-2026\"}" | jq '{username, role}'
# security admin: where this agency's backends may be (host or CIDR, port, protocol): here the demo's echo backend
curl -sf "$CP/v1/network-policies" -H "authorization: Bearer $SEC" -H 'content-type: application/json' \
  -d "{\"agency_id\":\"$AG\",\"name\":\"social-dc\",\"rules\":[{\"destination\":\"$ECHO_HOST\",\"port\":$ECHO_PORT,\"protocol\":\"http\"}]}" | jq '{name, rules}'
# security admin: the key the agency's backend uses to verify the gateway signature (shown once)
curl -sf "$CP/v1/signing-keys" -H "authorization: Bearer $SEC" -H 'content-type: application/json' \
  -d "{\"agency_id\":\"$AG\"}" | jq '{key_id, secret}'

OP=$(login '{"username":"social-op","password":"Pension-Desk-2026"}')
SVC=$(curl -sf "$CP/v1/services" -H "authorization: Bearer $OP" -H 'content-type: application/json' -d "{
  \"name\": \"pension\", \"title\": \"养老金查询\", \"kind\": \"api\",
  \"upstream\": {\"targets\": [{\"addr\": \"$ECHO_HOST:$ECHO_PORT\"}], \"timeouts\": {\"read\": \"5s\"}}
}" | jq -r .id)
curl -sf "$CP/v1/routes" -H "authorization: Bearer $OP" -H 'content-type: application/json' -d "{
  \"service_id\": \"$SVC\", \"name\": \"pension-balance\", \"description\": \"养老金余额\",
  \"paths\": [\"/social/pension/balance\"], \"methods\": [\"GET\"]
}" | jq '{name, paths}'
curl -sf -X POST "$CP/v1/services/$SVC/submit" -H "authorization: Bearer $OP" | jq .status   # "submitted"

curl -sf -X POST "$CP/v1/services/$SVC/verifications" -H "authorization: Bearer $SYS" \
  -H 'content-type: application/json' -d '{}' | jq '{result, summary}'   # "passed"
curl -sf -X POST "$CP/v1/services/$SVC/publish" -H "authorization: Bearer $SYS" \
  -H 'content-type: application/json' -d '{"channels":["wechat","alipay"]}' | jq '{status, channels}'

curl -sf --retry 5 --retry-delay 1 --retry-all-errors -H "Authorization: Bearer $DEMO_TOKEN" \
  "$GW/social/pension/balance" | jq '{echo, path, user: .headers["x-fenfa-user"], channel: .headers["x-fenfa-channel"]}'
