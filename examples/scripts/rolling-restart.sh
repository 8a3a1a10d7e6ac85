#!/usr/bin/env bash
# rolling-restart.sh: restart the brokers of a Kafka cluster on VMs one at a
# time, for Flotilla's exec driver (see examples/exec-drivers.yaml).
#
#   rolling-restart.sh apply    restart every broker this command has not restarted yet
#   rolling-restart.sh verify   every broker is up and no partition is under-replicated
#   rolling-restart.sh probe    health for the monitor: exit 0 healthy, 1 degraded, 2 unhealthy
#
# The cluster's inventory entry gives:
#   address             bootstrap servers, for kafka-topics.sh
#   settings.brokers    broker hosts, comma-separated, in restart order (required)
#   settings.service    systemd unit of the broker (default: kafka)
#   settings.ssh.user   user to ssh as, allowed to sudo systemctl (default: kafka)
#   settings.admin.config  client properties file for kafka-topics.sh on the
#                       executor's host (TLS/SASL; it holds no secret itself if
#                       it points at files or env the executor was given)
#
# Idempotence (the exec driver's contract): the executor runs "apply" again
# with the same FLOTILLA_COMMAND_ID after a crash or a redelivery. This script
# records each broker it restarted under that ID and a retry carries on with
# the next broker, instead of restarting the whole cluster again. Keep
# RESTART_STATE_DIR on a volume that survives the executor (a retry on another
# machine without it restarts every broker again: safe, only slower).
#
# Everything from the request or the inventory is data: it is checked against
# a strict pattern before it reaches a remote shell.
set -euo pipefail

step=${1:?usage: rolling-restart.sh apply|verify|probe}
cluster=${FLOTILLA_CLUSTER_ID:?run me from the Flotilla exec driver}
bootstrap=${FLOTILLA_CLUSTER_ADDRESS:?cluster $cluster has no address (bootstrap servers)}
service=${FLOTILLA_SETTING_SERVICE:-kafka}
ssh_user=${FLOTILLA_SETTING_SSH_USER:-kafka}
state_dir=${RESTART_STATE_DIR:-/var/lib/flotilla/rolling-restart}
poll=${POLL_SECONDS:-10}

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '%s\n' "$1" >&2; exit "${2:-1}"; }
safe() { [[ $2 =~ ^[A-Za-z0-9@._:-]+$ ]] || die "$1 \"$2\" has characters this script refuses" 64; }

IFS=, read -r -a brokers <<<"${FLOTILLA_SETTING_BROKERS:?cluster $cluster has no \"brokers\" setting (comma-separated hosts)}"
for host in "${brokers[@]}"; do safe "broker host" "$host"; done
safe "service" "$service"
safe "ssh user" "$ssh_user"

# remote HOST ARGS...: run a command on a broker. Arguments were checked by
# safe, so the remote shell sees no metacharacters.
remote() {
	local host=$1
	shift
	# shellcheck disable=SC2086 # SSH_OPTS is a list of options
	ssh ${SSH_OPTS:-} "$ssh_user@$host" "$@"
}

# under_replicated prints how many partitions are under-replicated; it fails
# when the cluster cannot be asked.
under_replicated() {
	local args=(--bootstrap-server "$bootstrap" --describe --under-replicated-partitions) out
	if [[ -n ${FLOTILLA_SETTING_ADMIN_CONFIG:-} ]]; then
		args+=(--command-config "$FLOTILLA_SETTING_ADMIN_CONFIG")
	fi
	out=$("${KAFKA_BIN:+$KAFKA_BIN/}kafka-topics.sh" "${args[@]}") || return 1
	grep -c . <<<"$out" || true
}

state_of() { remote "$1" systemctl is-active "$service" 2>/dev/null || true; }

# wait_in_sync waits until no partition is under-replicated; the driver's
# timeout bounds the wait.
wait_in_sync() {
	local urp
	until urp=$(under_replicated) && [[ $urp == 0 ]]; do
		log "waiting for ${urp:-?} under-replicated partitions $1"
		sleep "$poll"
	done
}

apply() {
	[[ $FLOTILLA_OPERATION == restart ]] || die "rolling-restart.sh restarts only (got a $FLOTILLA_OPERATION operation)" 64
	local done_file="$state_dir/$cluster.${FLOTILLA_COMMAND_ID//[^A-Za-z0-9._-]/_}"
	mkdir -p "$state_dir"
	touch "$done_file"
	wait_in_sync "before restarting anything"
	for host in "${brokers[@]}"; do
		if grep -qxF "$host" "$done_file"; then
			log "$host: already restarted by command $FLOTILLA_COMMAND_ID"
			continue
		fi
		log "$host: restarting $service"
		remote "$host" sudo systemctl restart "$service" || die "$host: systemctl restart $service failed"
		until [[ $(state_of "$host") == active ]]; do
			log "$host: waiting for $service to be active"
			sleep "$poll"
		done
		wait_in_sync "after restarting $host"
		echo "$host" >>"$done_file"
	done
	log "all ${#brokers[@]} brokers of $cluster restarted"
}

verify() {
	local urp
	for host in "${brokers[@]}"; do
		[[ $(state_of "$host") == active ]] || die "$host: $service is not active"
	done
	urp=$(under_replicated) || die "cannot describe the topics of $cluster at $bootstrap"
	[[ $urp == 0 ]] || die "$urp partitions are under-replicated"
	log "$cluster: ${#brokers[@]} brokers active, no partition under-replicated"
}

# probe reports health by exit status and, on its last line, a JSON report
# (hosts were checked by safe and versions match [0-9A-Za-z.]: no escaping
# needed).
probe() {
	local down=() versions=() reasons=() urp v status=0
	for host in "${brokers[@]}"; do
		if [[ $(state_of "$host") != active ]]; then
			down+=("$host")
			continue
		fi
		# The version of the installed broker, from its jar's name (kafka_2.13-3.9.1.jar).
		v=$(remote "$host" ls /opt/kafka/libs 2>/dev/null | sed -n 's/^kafka_[0-9.]*-\([0-9][0-9A-Za-z.]*\)\.jar$/\1/p' | head -n1) || true
		[[ " ${versions[*]} " == *" ${v:-unknown} "* ]] || versions+=("${v:-unknown}")
	done
	if ((${#down[@]} == ${#brokers[@]})); then
		status=2
		reasons+=("all brokers are down")
	elif ((${#down[@]} > 0)); then
		status=1
		reasons+=("brokers down: ${down[*]}")
	fi
	if ! urp=$(under_replicated); then
		status=2
		reasons+=("cannot describe topics at $bootstrap")
		urp=-1
	elif ((urp > 0)); then
		((status > 1)) || status=1
		reasons+=("$urp partitions under-replicated")
	fi
	if ((${#versions[@]} > 1)); then
		((status > 1)) || status=1
		reasons+=("brokers run different versions: ${versions[*]}")
	fi
	local json_reasons="" r
	for r in "${reasons[@]}"; do json_reasons+="${json_reasons:+,}\"$r\""; done
	printf '{"version":"%s","reasons":[%s],"details":{"brokers":%d,"down":%d,"under_replicated":%d}}\n' \
		"${versions[0]:-}" "$json_reasons" "${#brokers[@]}" "${#down[@]}" "$urp"
	exit "$status"
}

case $step in
apply) apply ;;
verify) verify ;;
probe) probe ;;
*) die "unknown step \"$step\" (want apply, verify or probe)" 64 ;;
esac
