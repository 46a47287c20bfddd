# shellcheck shell=bash
# Teardown of step "api-lb": the generated files (the packages go with step "lb-packages").
rm -f /etc/kube-hardway/lb/keepalived.conf /etc/kube-hardway/lb/nginx-modules.conf
