# shellcheck shell=bash
# Step "etcd-backup" (etcdBackup.schedule): a systemd timer that snapshots this member on a
# schedule and keeps the newest etcdBackup.keep snapshots (seed 004's backup, automated).
# The schedule is checked by systemd before anything changes. The snapshots are data: the
# step's teardown removes the timer, never the snapshots. Env: KHW_SCHEDULE
if ! out=$(systemd-analyze calendar "$KHW_SCHEDULE" 2>&1); then
  khw_die "etcdBackup.schedule '$KHW_SCHEDULE' is not a calendar event systemd accepts: $out"
fi
if khw_changed /etc/systemd/system/etcd-snapshot.; then systemctl daemon-reload; fi
khw_service etcd-snapshot.timer /etc/systemd/system/etcd-snapshot.service /opt/etcd/bin/etcd-snapshot-scheduled
khw_log "etcd snapshots: $(systemctl show -p NextElapseUSecRealtime --value etcd-snapshot.timer 2>/dev/null || echo scheduled) next"
