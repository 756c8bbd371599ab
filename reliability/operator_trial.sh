#!/usr/bin/env bash
# The operator trial's cron part (docs/operator-trial.md): install a clone of cronwarden as
# docs/deploy.md says, give crontab.example to a real cron daemon for a few minutes against one
# database and a loopback SMTP server, then show what an operator would look at.
#
#   bash reliability/operator_trial.sh sqlite|postgres|mariadb [MINUTES] [SOURCE]
#
# Needs root (a system user, a crontab, /etc and /opt folders) and Debian's cron; SOURCE is a fresh
# clone (default: this checkout). Everything lives under names starting with "cwtrial" and is removed
# at the end unless KEEP=1.
set -euo pipefail

kind=${1:?usage: operator_trial.sh sqlite|postgres|mariadb [MINUTES] [SOURCE]}
minutes=${2:-5}
source_dir=$(cd "${3:-$(dirname "$0")/..}" && pwd)
user=cwtrial
venv=/opt/cwtrial
etc=/etc/cwtrial
var=/var/lib/cwtrial
mail=/var/mail/cwtrial.mbox
smtp_port=2525
python=${PYTHON:-/usr/bin/python3}   # the system Python: one the cron user can run

[ "$(id -u)" = 0 ] || { echo "operator_trial: run as root" >&2; exit 2; }
command -v cron >/dev/null || { echo "operator_trial: install Debian's cron (apt-get install cron)" >&2; exit 2; }

cleanup() {
  [ "${KEEP:-0}" = 1 ] && { echo "kept: $venv $etc $var (KEEP=1)"; return; }
  crontab -u "$user" -r 2>/dev/null || true
  [ -n "${smtp_pid:-}" ] && kill "$smtp_pid" 2>/dev/null || true
  case $kind in
    postgres) psql -qh 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS cwtrial WITH (FORCE)" >/dev/null ;;
    mariadb) mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS cwtrial" ;;
  esac
  pkill -u "$user" 2>/dev/null || true
  userdel "$user" 2>/dev/null || true
  rm -rf "$venv" "$etc" "$var"
}
trap cleanup EXIT

echo "== install, as docs/deploy.md says (own venv, cron user, 0600 env file)"
id "$user" >/dev/null 2>&1 || useradd --system --home-dir "$var" --shell /usr/sbin/nologin "$user"
"$python" -m venv "$venv" && "$venv/bin/pip" install -q "$source_dir" aiosmtpd
install -d -m 700 -o "$user" -g "$user" "$etc" "$var" "$var/locks" "$var/logs"
install -m 600 -o "$user" -g "$user" /dev/null "$etc/cronwarden.env"

case $kind in
  sqlite) url="sqlite:///$var/cronwarden.db" ;;
  postgres)
    psql -qh 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS cwtrial WITH (FORCE)" -c "CREATE DATABASE cwtrial"
    url="postgresql://postgres@127.0.0.1:5432/cwtrial" ;;
  mariadb)
    mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS cwtrial; CREATE DATABASE cwtrial"
    url="mysql://root@127.0.0.1:3306/cwtrial" ;;
  *) echo "operator_trial: unknown database $kind" >&2; exit 2 ;;
esac

cat >"$etc/cronwarden.toml" <<EOF
[jobs.email-queue]
smtp_host = "127.0.0.1"
smtp_port = $smtp_port
from_address = "noreply@example.com"

[jobs.log-cleanup]
log_directory = "$var/logs"
EOF
chown "$user:$user" "$etc/cronwarden.toml"
cat >"$etc/cronwarden.env" <<EOF
export CRONWARDEN_DATABASE_URL='$url'
export CRONWARDEN_CONFIG=$etc/cronwarden.toml
export CRONWARDEN_LOCK_DIR=$var/locks
EOF
as_user() { runuser -u "$user" -- bash -c ". $etc/cronwarden.env && cd $var && $*"; }

echo "== deploy step: tables, then sample data the jobs will find"
as_user "$venv/bin/cronwarden db upgrade --app-tables"
"$venv/bin/python" - "$url" <<'EOF'
import sys
from datetime import datetime, timedelta, timezone
from sqlalchemy import create_engine, text
url = sys.argv[1].replace("postgresql://", "postgresql+psycopg://").replace("mysql://", "mysql+pymysql://")
now = datetime.now(timezone.utc).replace(tzinfo=None)
with create_engine(url).begin() as conn:
    conn.execute(text("INSERT INTO users (username, email, password_hash, is_admin, last_login_ip, last_login_at, created_at) "
                      "VALUES (:u, :e, 'x', FALSE, :ip, :t, :t)"),
                 [{"u": f"user{i}", "e": f"user{i}@example.com", "ip": "192.0.2.7",
                   "t": now - timedelta(days=100 + i % 3)} for i in range(200)])
    conn.execute(text("INSERT INTO refresh_tokens (user_id, token_hash, expires_at, created_at) VALUES (1, :h, :t, :t)"),
                 [{"h": f"hash{i}", "t": now - timedelta(days=8) if i % 2 else now + timedelta(days=1)}
                  for i in range(5000)])
EOF

echo "== a loopback SMTP server and a sendmail that keeps what cron mails"
"$venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Sink &
smtp_pid=$!
if [ ! -e /usr/sbin/sendmail ] || grep -q cwtrial /usr/sbin/sendmail 2>/dev/null; then
  printf '#!/bin/sh\n# cwtrial: keeps cron mail for the operator trial\n{ echo "From cron $(date -u +%%FT%%TZ)"; cat; echo; } >> %s\n' \
    "$mail" >/usr/sbin/sendmail
  chmod 755 /usr/sbin/sendmail
fi
: >"$mail"; chmod 666 "$mail"

echo "== crontab.example, verbatim but for the trial's paths"
sed -e "s#/opt/cronwarden/bin#$venv/bin#" -e "s#/etc/cronwarden/cronwarden.env#$etc/cronwarden.env#" \
    "$source_dir/crontab.example" | crontab -u "$user" -
pgrep -x cron >/dev/null || cron

echo "== $minutes minutes of cron; an application queues an email every 20 s meanwhile"
end=$((SECONDS + minutes * 60))
n=0
while (( SECONDS < end )); do
  if "$venv/bin/python" - "$url" "$n" <<'EOF'
import sys
from sqlalchemy import create_engine, text
url = sys.argv[1].replace("postgresql://", "postgresql+psycopg://").replace("mysql://", "mysql+pymysql://")
with create_engine(url).begin() as conn:   # what an application does: a plain INSERT, defaults from the server
    conn.execute(text("INSERT INTO email_queue (to_address, subject, body) VALUES (:to, :s, 'hello')"),
                 {"to": f"user{sys.argv[2]}@example.com", "s": f"trial {sys.argv[2]}"})
EOF
  then :; else echo "the application could not queue an email with a plain INSERT (see above)"; fi
  n=$((n + 1)); sleep 20
done
crontab -u "$user" -r

echo "== what the operator looks at"
sleep 5
as_user "$venv/bin/cronwarden status" || true
as_user "$venv/bin/cronwarden history --limit 15" || true
as_user "$venv/bin/cronwarden check" && echo "check exit: 0" || echo "check exit: $?"
"$venv/bin/python" - "$url" <<'EOF'
import sys
from sqlalchemy import create_engine, text
url = sys.argv[1].replace("postgresql://", "postgresql+psycopg://").replace("mysql://", "mysql+pymysql://")
with create_engine(url).connect() as conn:
    print("emails by status:", dict(conn.execute(text("SELECT status, COUNT(*) FROM email_queue GROUP BY status")).all()))
    print("runs by job and status:", conn.execute(text(
        "SELECT job_name, status, COUNT(*) FROM job_runs GROUP BY job_name, status ORDER BY 1, 2")).all())
    print("expired tokens left:", conn.execute(text(
        "SELECT COUNT(*) FROM refresh_tokens WHERE expires_at < CURRENT_TIMESTAMP")).scalar())
EOF
echo "cron mails (each is a line that printed something): $(grep -c '^From cron' "$mail" || true)"
head -40 "$mail"
echo "files under $var:"; ls -la "$var" "$var/locks" | sed 's/^/  /'
