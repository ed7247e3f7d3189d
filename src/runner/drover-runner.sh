#!/bin/sh
# drover-runner: starts, lists, signals and cleans up Drover's containers on one VM (POSIX sh).
#
# State: one directory per container under $DROVER_RUNNER_DIR (default ~/.drover/containers):
#   starter, starter.ident  the `start` process that is launching the container
#   command                 sourced by the wrapper: `export NAME='value'` lines, then `set -- 'arg'...`
#   wrapper                 the script that runs the command and records how it ended
#   claim/                  made by whoever decides whether the command runs (wrapper, or start giving up)
#   pid, pid.ident          the wrapper: session and process group leader of the container
#   signal                  the last signal number sent by `kill`
#   exit                    the exit code, written by the wrapper when the command ends
#   docker                  present when the command is `docker run`
#   work/                   the container's working directory
#   output                  its stdout and stderr
# Every file another process may read while it is written is written to a temp file, then renamed.
# A directory is deleted by first renaming it into $DROVER_RUNNER_DIR/+tombs/ (`+` cannot be in a
# uuid, so no command reads it as a container), then deleting it there: a half-deleted directory
# would otherwise be listed, as running or as exited 255.
#
# Commands:
#   start   starts the container detached and returns once it runs.
#   list    prints one line per container, sorted by uuid: `UUID running` or `UUID exited CODE`.
#   wait    blocks until a container has exited whose uuid is not among the UUIDs given (those the
#           caller already knows ended), or SECONDS have passed; returns at once when one already
#           has. Then prints what list prints. A long poll: completions are pushed, not probed for.
#   kill    signals the container's whole process group (nothing to do once it has exited).
#   logs    prints the last BYTES (default 65536) of the container's stdout and stderr; when the
#           output is longer, first a line saying how much was dropped (queue/types.ts logTailMarker):
#           `[drover: TOTAL bytes of output; the first DROPPED were dropped, the last BYTES kept]`.
#   remove  deletes a finished container's directory.
#
# Exit codes (deploy.ts has them as runnerExit):
#   0 done.
#   1 failed, for a reason on the instance: nothing was started or changed.
#   2 bad usage: bad arguments, which no retry anywhere can fix.
#   3 start: the container already exists (an earlier start of it got through: it counts as
#     started); remove: the container is still running.
#   4 no container with that uuid.
#   5 start: the outcome is unknown (the command may or may not run); ask list.

set -u

VERSION='drover-runner 1'
SQ="'"
ESCAPED_SQ="'\\''"

usage() {
  cat >&2 <<'EOF'
usage: drover-runner start UUID [--image IMAGE] [--docker] [--env NAME=VALUE]... -- ARGV...
       drover-runner list
       drover-runner wait SECONDS [UUID...]
       drover-runner kill SIGNAL UUID
       drover-runner logs UUID [BYTES]
       drover-runner remove UUID
       drover-runner version
EOF
  exit 2
}

die() {
  code=$1
  shift
  printf 'drover-runner: %s\n' "$*" >&2
  exit "$code"
}

if [ -n "${DROVER_RUNNER_DIR-}" ]; then
  DIR=$DROVER_RUNNER_DIR
elif [ -n "${HOME-}" ]; then
  DIR=$HOME/.drover/containers
else
  die 1 'neither DROVER_RUNNER_DIR nor HOME is set'
fi
TOMBS=$DIR/+tombs

check_uuid() {
  is_uuid "$1" || die 2 "invalid container uuid: '$1' (allowed: A-Z a-z 0-9 . _ -)"
}

is_uuid() {
  # `.` and `..` match the character class but would name the state directory or its parent.
  case $1 in
    '' | . | .. | *[!A-Za-z0-9._-]*) return 1 ;;
  esac
}

existing_dir() {
  check_uuid "$1"
  [ -d "$DIR/$1" ] || die 4 "no container $1"
  CDIR=$DIR/$1
}

# Sets REPLY to $1 quoted for sh. Done in the shell rather than with sed so that newlines,
# trailing ones included, survive.
quote() {
  _rest=$1
  REPLY=
  while :; do
    case $_rest in
      *"$SQ"*)
        REPLY=$REPLY${_rest%%"$SQ"*}$ESCAPED_SQ
        _rest=${_rest#*"$SQ"}
        ;;
      *) break ;;
    esac
  done
  REPLY=$SQ$REPLY$_rest$SQ
}

# Writes $2 (plus a newline) to file $1 so that a reader sees either no file or all of it.
write_file() {
  printf '%s\n' "$2" >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

# Sets REPLY to the first line of file $1, without forking: `list` reads several files per
# container and stays fast with many containers. Fails when the file cannot be read.
read_line() {
  REPLY=
  [ -r "$1" ] || return 1
  IFS= read -r REPLY <"$1" || [ -n "$REPLY" ]
}

BOOT_ID=
if read_line /proc/sys/kernel/random/boot_id; then BOOT_ID=$REPLY; fi

# Sets IDENT to "BOOT_ID START_TIME" of process $1 and STAT_STATE to its state letter; both empty
# without /proc. A pid alone is not enough: after a reboot or a long uptime the same number can
# belong to an unrelated process.
proc_info() {
  IDENT=
  STAT_STATE=
  read_line "/proc/$1/stat" || return 1
  # comm (field 2) may hold spaces and parentheses; everything after its last ") " is plain.
  _stat=${REPLY##*) }
  # shellcheck disable=SC2086 # splitting the fields is the point
  set -- $_stat
  STAT_STATE=${1-}
  [ $# -ge 20 ] || return 0
  shift 19
  IDENT="$BOOT_ID $1"
}

# True while process $1 runs; when $2 (an ident) is given, only if it is still that process.
alive() {
  case $1 in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$1" 2>/dev/null || return 1
  [ -r /proc/self/stat ] || return 0
  proc_info "$1" || return 1
  # A zombie still answers kill -0; some PID 1s in containers never reap them.
  case $STAT_STATE in Z | X | x) return 1 ;; esac
  [ -z "${2-}" ] || [ "$IDENT" = "$2" ]
}

# True while the process recorded in file $1 (with its ident in $1.ident) runs.
recorded_alive() {
  read_line "$1" || return 1
  _pid=$REPLY
  read_line "$1.ident" || REPLY=
  alive "$_pid" "$REPLY"
}

# Sets STATE to "running" or "exited CODE" for the container in directory $1.
container_state() {
  _d=$1
  if read_line "$_d/exit"; then
    STATE="exited $REPLY"
    return
  fi
  STATE=running
  if [ ! -f "$_d/pid" ]; then
    # start made the directory an instant ago and has not recorded itself yet.
    [ -f "$_d/starter" ] || return 0
    # start is still launching the wrapper; it only ends once the wrapper has written its pid.
    ! recorded_alive "$_d/starter" || return 0
  fi
  ! recorded_alive "$_d/pid" || return 0
  # The wrapper writes exit just before it ends, possibly since the first look.
  if read_line "$_d/exit"; then
    STATE="exited $REPLY"
    return
  fi
  # Gone without a word: killed together with its wrapper (kill KILL), or the VM rebooted.
  STATE='exited 255'
  if read_line "$_d/signal"; then
    case $REPLY in '' | *[!0-9]*) ;; *) STATE="exited $((128 + REPLY))" ;; esac
  fi
}

# Waits up to about 10 s for file $1 to exist.
wait_for_file() {
  [ ! -f "$1" ] || return 0
  _tick=0.02
  _left=500
  # Fractional sleep is not POSIX; where it is missing, poll each second instead.
  sleep "$_tick" 2>/dev/null || {
    _tick=1
    _left=10
  }
  while [ ! -f "$1" ]; do
    _left=$((_left - 1))
    [ "$_left" -gt 0 ] || return 1
    sleep "$_tick"
  done
}

# Sets NOW_CS to the time since boot in centiseconds, without forking; fails without /proc/uptime.
uptime_cs() {
  read_line /proc/uptime || return 1
  _up=${REPLY%% *}
  case $_up in *[!0-9.]* | *.*.*) return 1 ;; [0-9]*.[0-9][0-9]) ;; *) return 1 ;; esac
  _frac=${_up#*.}
  # A leading 0 would make it octal.
  NOW_CS=$((${_up%.*} * 100 + ${_frac#0}))
}

# Renames directory $1 to a tombstone, then deletes it. Fails only when the rename fails: once
# renamed it is no container any more, and a tombstone left behind goes with the next remove.
bury() {
  mkdir -p "$TOMBS" 2>/dev/null
  _tomb=$TOMBS/${1##*/}.$$
  _n=0
  # mv into an existing directory would move $1 inside it; a stale tombstone may hold our pid.
  while [ -e "$_tomb" ] || [ -L "$_tomb" ]; do
    _n=$((_n + 1))
    _tomb=$TOMBS/${1##*/}.$$.$_n
  done
  mv "$1" "$_tomb" 2>/dev/null || return 1
  rm -rf "$_tomb" 2>/dev/null || printf 'drover-runner: warning: cannot delete %s\n' "$_tomb" >&2
  return 0
}

# Deletes tombstones left behind by a bury that was interrupted or could not delete everything.
sweep_tombs() {
  # Three patterns, as tombstones of uuids that start with a dot are hidden from `*`.
  for _t in "$TOMBS"/* "$TOMBS"/.[!.]* "$TOMBS"/..?*; do
    [ -e "$_t" ] || [ -L "$_t" ] || continue
    # Another remove may be deleting it right now; whatever it leaves, a later sweep takes.
    rm -rf "$_t" 2>/dev/null
  done
}

# Prints the number of signal $1 (a name, with or without SIG, or a number); fails if unknown.
signal_number() {
  case $1 in
    '' | *[!A-Za-z0-9]*) return 1 ;;
    *[!0-9]*) ;;
    *)
      # 0 only probes; it would record a meaningless 128 as the exit code.
      [ "$1" -ge 1 ] && kill -l "$1" >/dev/null 2>&1 || return 1
      echo "$1"
      return
      ;;
  esac
  _name=${1#SIG}
  case $_name in
    HUP) echo 1 ;;
    INT) echo 2 ;;
    QUIT) echo 3 ;;
    KILL) echo 9 ;;
    TERM) echo 15 ;;
    *)
      # `kill -l NAME` is not portable (dash wants a number), so look the name up by number.
      _n=1
      while [ "$_n" -le 64 ]; do
        if [ "$(kill -l "$_n" 2>/dev/null)" = "$_name" ]; then
          echo "$_n"
          return
        fi
        _n=$((_n + 1))
      done
      return 1
      ;;
  esac
}

write_wrapper() {
  cat >"$1" <<'WRAPPER'
# Runs one Drover container and records its pid and exit code; $1 is its state directory.
drover_dir=$1
# start claims the container instead when this wrapper is too slow to appear; then it must not run.
mkdir "$drover_dir/claim" 2>/dev/null || exit 0
# Caught rather than ignored: `kill` signals the whole group, and the wrapper must outlive the
# command to record its code. A caught signal is reset in the command; an ignored one would not be.
trap : HUP INT QUIT TERM USR1 USR2 ALRM PIPE
drover_ident=
if drover_stat=$(cat "/proc/$$/stat" 2>/dev/null); then
  drover_stat=${drover_stat##*) }
  # shellcheck disable=SC2086 # splitting the fields is the point
  set -- $drover_stat
  if [ $# -ge 20 ]; then
    shift 19
    drover_ident="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null) $1"
  fi
fi
if [ -n "$drover_ident" ]; then
  printf '%s\n' "$drover_ident" >"$drover_dir/pid.ident.tmp" && mv -f "$drover_dir/pid.ident.tmp" "$drover_dir/pid.ident"
fi
printf '%s\n' "$$" >"$drover_dir/pid.tmp" && mv -f "$drover_dir/pid.tmp" "$drover_dir/pid"
# A subshell, so that the container's environment cannot change the commands below.
(cd "$drover_dir/work" && . "$drover_dir/command" && exec "$@") </dev/null >>"$drover_dir/output" 2>&1
drover_code=$?
printf '%s\n' "$drover_code" >"$drover_dir/exit.tmp" && mv -f "$drover_dir/exit.tmp" "$drover_dir/exit"
WRAPPER
}

cmd_start() {
  [ $# -ge 1 ] || usage
  uuid=$1
  shift
  check_uuid "$uuid"
  image=
  docker=
  exports=
  docker_env=
  while [ $# -gt 0 ]; do
    case $1 in
      --image)
        [ $# -ge 2 ] || die 2 '--image needs a value'
        image=$2
        shift 2
        ;;
      --docker)
        docker=1
        shift
        ;;
      --env)
        [ $# -ge 2 ] || die 2 '--env needs NAME=VALUE'
        case $2 in *=*) ;; *) die 2 "--env needs NAME=VALUE, got: $2" ;; esac
        name=${2%%=*}
        case $name in
          '' | [0-9]* | *[!A-Za-z0-9_]*) die 2 "invalid environment variable name: $name" ;;
        esac
        quote "${2#*=}"
        exports="${exports}export $name=$REPLY
"
        quote "$2"
        docker_env="$docker_env '-e' $REPLY"
        shift 2
        ;;
      --)
        shift
        break
        ;;
      *) die 2 "start: unexpected argument '$1' (the command goes after --)" ;;
    esac
  done
  if [ -n "$docker" ]; then
    [ -n "$image" ] || die 2 'start: --docker needs --image'
    quote "drover-$uuid"
    name_word=$REPLY
    quote "$image"
    set_line="set -- 'docker' 'run' '--rm' '--name' $name_word$docker_env $REPLY"
    # No env for the docker CLI itself: the container gets it through -e.
    exports=
  else
    [ $# -gt 0 ] || die 2 'start: no command given after --'
    set_line='set --'
  fi
  for arg in "$@"; do
    quote "$arg"
    set_line="$set_line $REPLY"
  done

  mkdir -p "$DIR" || die 1 "cannot create $DIR"
  cdir=$DIR/$uuid
  # mkdir is atomic: of two concurrent starts of one uuid, exactly one gets here.
  if ! mkdir "$cdir" 2>/dev/null; then
    [ -e "$cdir" ] && die 3 "container $uuid already exists; a container is never started twice"
    die 1 "cannot create $cdir"
  fi
  if ! {
    { ! proc_info $$ || write_file "$cdir/starter.ident" "$IDENT"; } &&
      write_file "$cdir/starter" "$$" &&
      mkdir "$cdir/work" &&
      : >"$cdir/output" &&
      printf '%s%s\n' "$exports" "$set_line" >"$cdir/command" &&
      write_wrapper "$cdir/wrapper" &&
      { [ -z "$docker" ] || : >"$cdir/docker"; }
  }; then
    # Nothing can run from it: the wrapper is not launched yet.
    bury "$cdir" || rm -rf "$cdir"
    die 1 "cannot prepare $cdir"
  fi

  # Its own session and process group, so that it outlives this SSH session and `kill` can signal
  # everything it started; no stdio shared with us, or the SSH channel would stay open.
  if command -v setsid >/dev/null 2>&1; then
    setsid sh "$cdir/wrapper" "$cdir" </dev/null >/dev/null 2>&1 &
  else
    nohup sh "$cdir/wrapper" "$cdir" </dev/null >/dev/null 2>&1 &
  fi

  wait_for_file "$cdir/pid" && return 0
  if mkdir "$cdir/claim" 2>/dev/null; then
    # The claim keeps the wrapper from ever running it; removing the directory lets a retry
    # start it afresh instead of finding a fake "exited 255" under this uuid.
    bury "$cdir" || rm -rf "$cdir"
    die 1 "container $uuid did not start within 10s"
  fi
  # The wrapper claimed it, so its pid is a moment away. Without it we cannot tell whether the
  # command runs: list can, once the wrapper has written its pid or its exit code.
  wait_for_file "$cdir/pid" || die 5 "container $uuid started but did not report its pid; outcome unknown, ask list"
}

cmd_list() {
  [ $# -eq 0 ] || usage
  [ -d "$DIR" ] || return 0
  # A failed ls must fail the list: read as "no containers", it would mark every one lost.
  names=$(ls -A "$DIR") || die 1 "cannot read $DIR"
  printf '%s\n' "$names" | LC_ALL=C sort | while IFS= read -r uuid; do
    # Also skips +tombs, whose name cannot be a uuid.
    is_uuid "$uuid" || continue
    [ -d "$DIR/$uuid" ] || continue
    container_state "$DIR/$uuid"
    printf '%s %s\n' "$uuid" "$STATE"
  done
}

# True when a container has exited whose uuid is not in $known (" UUID UUID ... ").
new_exit() {
  # Globs rather than ls: no fork on each poll. Three, as uuids may start with a dot.
  for _path in "$DIR"/* "$DIR"/.[!.]* "$DIR"/..?*; do
    _name=${_path##*/}
    # An unmatched pattern stays as it is, and is no uuid; nor is +tombs.
    is_uuid "$_name" || continue
    case $known in *" $_name "*) continue ;; esac
    [ -d "$_path" ] || continue
    container_state "$_path"
    [ "$STATE" = running ] || return 0
  done
  return 1
}

cmd_wait() {
  [ $# -ge 1 ] || usage
  case $1 in '' | *[!0-9]*) die 2 "wait: SECONDS must be a non-negative integer, got: '$1'" ;; esac
  # Leading zeros would make it octal, and nine digits (31 years) are plenty and cannot overflow.
  seconds=${1#"${1%%[!0]*}"}
  [ ${#seconds} -le 9 ] || die 2 "wait: SECONDS too large: $1"
  seconds=${seconds:-0}
  shift
  known=' '
  for uuid in "$@"; do
    check_uuid "$uuid"
    known="$known$uuid "
  done
  # The time since boot where /proc has it, so scanning many containers does not stretch the wait;
  # else the ticks slept are counted.
  if uptime_cs; then
    deadline=$((NOW_CS + seconds * 100))
  else
    deadline=
    elapsed=0
  fi
  tick=0.2
  tick_cs=20
  while ! new_exit; do
    if [ -n "$deadline" ]; then
      uptime_cs || NOW_CS=$deadline
      [ "$NOW_CS" -lt "$deadline" ] || break
    else
      [ "$elapsed" -lt $((seconds * 100)) ] || break
    fi
    # Fractional sleep is not POSIX; where it is missing, poll each second instead.
    sleep "$tick" 2>/dev/null || {
      tick=1
      tick_cs=100
      sleep 1
    }
    [ -n "$deadline" ] || elapsed=$((elapsed + tick_cs))
  done
  cmd_list
}

cmd_kill() {
  [ $# -eq 2 ] || usage
  existing_dir "$2"
  signum=$(signal_number "$1") || die 2 "unknown signal: $1"
  if [ ! -f "$CDIR/pid" ] && [ ! -f "$CDIR/exit" ]; then
    # Still being started: wait for the pid rather than lose the signal.
    wait_for_file "$CDIR/pid" || [ -f "$CDIR/exit" ] || die 1 "container $2 is still starting"
  fi
  container_state "$CDIR"
  [ "$STATE" = running ] || return 0
  read_line "$CDIR/pid" || die 1 "container $2 has no pid"
  pid=$REPLY
  # Recorded first, for the exit code when the signal also kills the wrapper (KILL).
  write_file "$CDIR/signal" "$signum"
  if [ -f "$CDIR/docker" ] && command -v docker >/dev/null 2>&1; then
    # Killing the docker CLI does not stop the container; the daemon owns it.
    docker kill --signal="$signum" "drover-$2" >/dev/null 2>&1
  fi
  if ! kill -s "$signum" -- "-$pid" 2>/dev/null; then
    # No group of its own (started with nohup, no setsid): the wrapper catches most signals, so
    # its children must be signalled too.
    if command -v pkill >/dev/null 2>&1; then pkill "-$signum" -P "$pid" 2>/dev/null; fi
    kill -s "$signum" "$pid" 2>/dev/null || {
      container_state "$CDIR"
      [ "$STATE" != running ] || die 1 "cannot signal container $2 (pid $pid)"
    }
  fi
  return 0
}

cmd_logs() {
  [ $# -ge 1 ] && [ $# -le 2 ] || usage
  bytes=${2-65536}
  case $bytes in '' | *[!0-9]*) die 2 "invalid byte count: $bytes" ;; esac
  existing_dir "$1"
  [ -f "$CDIR/output" ] || return 0
  # Leading zeros would read as octal in $(( )).
  bytes=${bytes#"${bytes%%[!0]*}"}
  bytes=${bytes:-0}
  # Over 15 digits is more than any output holds (and would overflow $(( )) and tail).
  if [ ${#bytes} -gt 15 ]; then
    cat "$CDIR/output"
    return
  fi
  # The size as of now: output a running container writes after this is not counted.
  total=$(wc -c <"$CDIR/output") || die 1 "cannot read $CDIR/output"
  total=$((total))
  if [ "$total" -gt "$bytes" ]; then
    printf '[drover: %s bytes of output; the first %s were dropped, the last %s kept]\n' \
      "$total" "$((total - bytes))" "$bytes"
  fi
  tail -c "$bytes" "$CDIR/output"
}

cmd_remove() {
  [ $# -eq 1 ] || usage
  existing_dir "$1"
  container_state "$CDIR"
  [ "$STATE" != running ] || die 3 "container $1 is still running"
  if ! bury "$CDIR"; then
    # A concurrent remove got there first.
    [ -e "$CDIR" ] || die 4 "no container $1"
    die 1 "cannot remove $CDIR"
  fi
  sweep_tombs
}

[ $# -ge 1 ] || usage
command=$1
shift
case $command in
  start) cmd_start "$@" ;;
  list) cmd_list "$@" ;;
  wait) cmd_wait "$@" ;;
  kill) cmd_kill "$@" ;;
  logs) cmd_logs "$@" ;;
  remove) cmd_remove "$@" ;;
  version) echo "$VERSION" ;;
  *) usage ;;
esac
