#!/bin/sh
# keepalived health check (step "api-lb"): this LB host's nginx forwards to a live apiserver.
# Anonymous /livez is allowed by the default system:public-info-viewer role.
exec curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:${1:-6443}/livez"
