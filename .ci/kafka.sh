#!/usr/bin/env bash
# A real Apache Kafka broker for the tests, from Maven Central, with no
# Docker and no download other than Maven's.
#
#   bash .ci/kafka.sh start   # fetch (once), format, start, wait; prints host:port last
#   bash .ci/kafka.sh stop    # stop the broker started here and delete its data
#   bash .ci/kafka.sh logs    # the tail of the broker's log
#   bash .ci/kafka.sh brokers # host:port of the running broker
#   bash .ci/kafka.sh secure  # host:port of its SASL listener, and admin:password
#   bash .ci/kafka.sh fetch   # only fetch the jars into the cache
#
# The broker is one KRaft node (broker and controller in one JVM, heap at
# most 512 MiB) on 127.0.0.1, port $FLOTILLA_KAFKA_PORT (39092), the next
# one for its controller and the one after for a SASL (SCRAM-SHA-512)
# listener whose requests the standard authorizer checks against ACLs, or
# three free ports if those are taken. Its config is
# .ci/kafka/server.properties; its storage is formatted afresh on every start.
#
# The jars (the version is kafka.version in .ci/kafka/pom.xml) are copied
# once by `mvn dependency:copy-dependencies` into
# ${XDG_CACHE_HOME:-$HOME/.cache}/flotilla/kafka-<version>-<pom hash>, and
# Maven keeps its own copy in ~/.m2, so only the first run on a machine
# downloads anything (about 45 MB).
#
# Environment: FLOTILLA_KAFKA_PORT, FLOTILLA_KAFKA_STATE (the broker's run
# directory: data, log, pid; default ${TMPDIR:-/tmp}/flotilla-kafka-$UID),
# FLOTILLA_KAFKA_CACHE (the jars), FLOTILLA_KAFKA_START_TIMEOUT (120s).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
pom=$here/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
pomhash=$(sha256sum "$pom" | cut -c1-12)
cache=${FLOTILLA_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla/kafka-$version-$pomhash}
state=${FLOTILLA_KAFKA_STATE:-${TMPDIR:-/tmp}/flotilla-kafka-$(id -u)}
# Any 16 bytes in URL-safe base64: the storage is new on every start.
cluster_id=ZmxvdGlsbGEtY2ktMDAwMQ

say() { echo "kafka.sh: $*" >&2; }
die() {
	say "ERROR: $*"
	exit 1
}

# fetch copies the broker's jars into the cache, unless they are there.
fetch() {
	[[ -f $cache/complete ]] && return
	command -v mvn >/dev/null || die "mvn not found: Maven is needed to fetch Apache Kafka $version from Maven Central"
	command -v java >/dev/null || die "java not found: Apache Kafka $version needs Java 17 or later"
	say "fetching Apache Kafka $version from Maven Central into $cache"
	local start=$SECONDS tmp
	mkdir -p "$(dirname "$cache")"
	tmp=$(mktemp -d "$cache.tmp.XXXXXX")
	if ! mvn -B -q -f "$pom" dependency:copy-dependencies \
		-DoutputDirectory="$tmp/libs" -DincludeScope=runtime >"$tmp/mvn.log" 2>&1; then
		cat "$tmp/mvn.log" >&2
		rm -rf "$tmp"
		die "mvn could not fetch Apache Kafka $version (see above)"
	fi
	ls "$tmp/libs"/kafka_2.13-"$version".jar >/dev/null || die "mvn did not copy kafka_2.13-$version.jar"
	touch "$tmp/complete"
	rm -rf "$cache"
	mv "$tmp" "$cache"
	say "fetched $(ls "$cache/libs" | wc -l) jars in $((SECONDS - start))s"
}

# ours reports whether pid is a broker started by this script on $state.
ours() {
	local pid=$1
	[[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $state/server.properties"
}

# clean_state deletes the run directory, if it is one this script made.
clean_state() {
	[[ -e $state ]] || return 0
	if [[ ! -f $state/.flotilla-kafka && -n $(ls -A "$state") ]]; then
		die "refusing to delete $state: kafka.sh did not make it (set FLOTILLA_KAFKA_STATE elsewhere)"
	fi
	rm -rf "$state"
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
	if [[ -f $state/pid ]]; then
		say "a broker from an earlier run is still recorded in $state: stopping it first"
		stop
	fi
	fetch
	command -v go >/dev/null || die "go not found: it builds the readiness probe"
	clean_state
	mkdir -p "$state/data"
	touch "$state/.flotilla-kafka"
	(cd "$root" && go build -o "$state/probe" .ci/kafka/probe.go) || die "cannot build .ci/kafka/probe.go"

	local port=${FLOTILLA_KAFKA_PORT:-39092} cport sport admin_pass
	cport=$((port + 1)) sport=$((port + 2))
	if port_taken "$port" || port_taken "$cport" || port_taken "$sport"; then
		say "port $port, $cport or $sport is taken: using free ports"
		{ read -r port && read -r cport && read -r sport; } < <("$state/probe" ports 3)
	fi
	# The SASL listener's super user, with a password of this start's.
	admin_pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
	(umask 077 && echo "admin:$admin_pass" >"$state/admin")

	local start=$SECONDS attempt
	local java=(java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
		-Dlog4j2.configurationFile="$here/kafka/log4j2.properties" -Dkafka.log.file="$state/kafka.log"
		-cp "$cache/libs/*")
	# Another process may take a port between the check and the broker's
	# bind: then the broker starts again on fresh free ports.
	for attempt in 1 2 3; do
		rm -rf "$state/data" && mkdir -p "$state/data"
		sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@SASL_PORT@|$sport|g" -e "s|@DATA_DIR@|$state/data|g" \
			"$here/kafka/server.properties" >"$state/server.properties"
		if ! "${java[@]}" kafka.tools.StorageTool format \
			-t "$cluster_id" -c "$state/server.properties" \
			--add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pass]" >"$state/format.log" 2>&1; then
			cat "$state/format.log" >&2
			die "cannot format the broker's storage in $state/data"
		fi
		nohup "${java[@]}" kafka.Kafka "$state/server.properties" \
			>"$state/stdout.log" 2>&1 </dev/null &
		local pid=$!
		echo "$pid" >"$state/pid"
		echo "127.0.0.1:$port" >"$state/brokers"
		echo "127.0.0.1:$sport" >"$state/secure"
		say "Apache Kafka $version starting (pid $pid) on 127.0.0.1:$port, controller on $cport, SASL on $sport; log in $state/kafka.log"

		if "$state/probe" wait -brokers "127.0.0.1:$port" -pid "$pid" \
			-timeout "${FLOTILLA_KAFKA_START_TIMEOUT:-120s}"; then
			break
		fi
		if ((attempt < 3)) && grep -qs "Address already in use" "$state/kafka.log" "$state/stdout.log"; then
			say "a port was taken meanwhile: starting again on free ports"
			kill -KILL "$pid" 2>/dev/null || true
			: >"$state/kafka.log"
			{ read -r port && read -r cport && read -r sport; } < <("$state/probe" ports 3)
			continue
		fi
		logs >&2
		stop
		die "Apache Kafka $version did not become ready (its log is above)"
	done
	say "ready in $((SECONDS - start))s"
	echo "127.0.0.1:$port"
}

stop() {
	if [[ ! -f $state/pid ]]; then
		say "no broker recorded in $state"
		clean_state
		return
	fi
	local pid
	pid=$(cat "$state/pid")
	if ours "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		# A controlled shutdown of one node takes a few seconds; the data
		# is thrown away, so do not wait long for it.
		local deadline=$((SECONDS + 20))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.2
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "broker (pid $pid) still running after 20s: killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		say "stopped the broker (pid $pid)"
	else
		say "broker (pid $pid) is no longer running"
	fi
	clean_state
}

logs() {
	local n=${1:-80}
	for f in "$state/stdout.log" "$state/kafka.log"; do
		if [[ -s $f ]]; then
			echo "----- last $n lines of $f"
			tail -n "$n" "$f"
		fi
	done
}

brokers() {
	[[ -f $state/brokers ]] || die "no broker running (start one with: bash .ci/kafka.sh start)"
	cat "$state/brokers"
}

# secure prints the SASL listener's address, then the super user's
# admin:password (the security tests' FLOTILLA_TEST_SECURE_BROKERS and
# FLOTILLA_TEST_SECURE_ADMIN).
secure() {
	[[ -f $state/secure && -f $state/admin ]] || die "no broker running (start one with: bash .ci/kafka.sh start)"
	cat "$state/secure" "$state/admin"
}

case ${1:-} in
start) start ;;
secure) secure ;;
stop) stop ;;
logs) logs "${2:-80}" ;;
brokers) brokers ;;
fetch) fetch ;;
*)
	echo "usage: bash .ci/kafka.sh start|stop|logs [N]|brokers|secure|fetch" >&2
	exit 2
	;;
esac
