# shellcheck shell=bash
# Teardown of step "binaries": the installed files are removed by khw_remove; drop the link.
if [ "$(readlink /usr/local/bin/kubectl 2>/dev/null)" = /opt/kubernetes/bin/kubectl ]; then rm -f /usr/local/bin/kubectl; fi
