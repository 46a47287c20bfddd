# shellcheck shell=bash
# Step "smoke-test" (seed 001): curl the nginx NodePort on every node; report each answer.
# Env: KHW_TARGETS ("name=ip ..."), KHW_NODE_PORT
failed=0
for t in $KHW_TARGETS; do
  name=${t%%=*}; ip=${t#*=}
  code=""
  for _ in $(seq 1 30); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$ip:$KHW_NODE_PORT/") || true
    [ "$code" = 200 ] && break
    sleep 2
  done
  echo "$name $ip:$KHW_NODE_PORT HTTP ${code:-none}"
  [ "$code" = 200 ] || failed=1
done
[ "$failed" = 0 ] || khw_die "the nginx NodePort did not answer 200 on every node (see above)"
