#!/usr/bin/env bash
# Drift read (resource HostState): report the actual state of what a host's steps manage,
# in one SSH round trip, one line per item:
#   F <path> <sha256|missing> <mode|->     U <unit> <enabled> <active>     S <setting> <value>
# Input on stdin, one per line: "F path" (digest + mode), "M path" (mode only: a binary whose
# digest is not pinned, not worth hashing on every refresh), "U unit", "S swap", "S sysctl KEY".
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
while read -r kind a b; do
  case "$kind" in
    F)
      if [ -f "$a" ]; then
        echo "F $a $(sha256sum "$a" | cut -d' ' -f1) $(stat -c %a "$a")"
      else
        echo "F $a missing -"
      fi ;;
    M)
      if [ -f "$a" ]; then echo "F $a * $(stat -c %a "$a")"; else echo "F $a missing -"; fi ;;
    U)
      en=$(systemctl is-enabled "$a" 2>/dev/null); [ -n "$en" ] || en=unknown
      ac=$(systemctl is-active "$a" 2>/dev/null); [ -n "$ac" ] || ac=unknown
      echo "U $a $en $ac" ;;
    S)
      case "$a" in
        swap) if [ -n "$(swapon --noheadings 2>/dev/null)" ]; then echo "S swap on"; else echo "S swap off"; fi ;;
        sysctl) echo "S sysctl:$b $(sysctl -n "$b" 2>/dev/null || echo unreadable)" ;;
      esac ;;
  esac
done
