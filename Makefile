# spark-ps build. Needs only python3.11, a JDK 17 and mvn on a fresh clone.
#
#   make build     venv + plugin jar + Delta jars
#   make kafka     spark-sql-kafka jars for Spark, and a Kafka broker's jars for the Kafka integration test
#   make test      build + kafka, then the fast tests, the docstring examples, the local-cluster integration
#                  tests, the whole-stream tests and the spark-submit jobs (all but the `slow` marker)
#   make test-stream  the whole-stream tests only (marker `stream`)
#   make test-slow the end-to-end tests kept out of make test for its ten minutes (marker `slow`)
#   make demo      build, then jobs/run_demo.sh: the train, predict and evaluate jobs on a9a (conf/a9a.toml)
#   make stream-demo  build, then jobs/stream_demo.py: streaming training killed and resumed (Delta, local[2])
#   make smoke     build, then the push/pull smoke job on local-cluster[2,1,1024]
#   make bench-ps  build, then the shard throughput benchmark (python -m bench.ps)
#   make bench     build, then the head-to-head with MLlib (python -m bench.mllib), then bench-sweeps, then
#                  where a default fit's wall time goes, cold and warm (python -m bench.profile_fit), then
#                  rows scaling at d=2^26 on local-cluster (python -m bench.scaling)
#   make bench-sweeps  build, then the tuning sweeps moved out of make test (python -m bench.sweeps)
#   make bench-raw build, then raw columns to AUC: FieldHasher + ours vs FeatureHasher + MLlib (python -m bench.raw_parity)
#   make bench-stream  build, then the streaming training benchmark (python -m bench.stream)
#   make clean     remove build outputs (keeps .venv; `make distclean` removes it too)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

# Every Spark JVM and sidecar binds loopback only.
export SPARK_LOCAL_IP := 127.0.0.1

PYTHON ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
# Stamp instead of the venv directory: its mtime changes whenever pip touches it.
VENV_STAMP := $(VENV)/.spark-ps-installed

JARS_DIR := spark_ps/jars
PLUGIN_JAR := $(JARS_DIR)/spark-ps-plugin.jar
PLUGIN_CLASSES := build/plugin-classes
JAVA_SRC := $(shell find plugin/src/main/java -name '*.java' 2>/dev/null | sort)

# Delta's version comes from pyproject.toml (the one place that states it); the Spark version from the
# pyspark the venv installed (pyproject states the supported range): Delta's jar is built per Spark minor
# (io.delta:delta-spark_<minor>_2.13). The jars get stable names, so conf/spark-defaults.conf and
# spark_ps.spark.session name no version; the stamp records which versions they are.
DELTA_VERSION := $(shell sed -n 's/^ *"delta-spark==\([^"]*\)".*/\1/p' pyproject.toml)
DELTA_JARS := $(JARS_DIR)/delta-spark.jar $(JARS_DIR)/delta-storage.jar
DELTA_STAMP := $(JARS_DIR)/.delta-$(DELTA_VERSION)
# The installed pyspark's version (empty until the venv exists; read by recipes only).
INSTALLED_SPARK = $(shell $(VPY) -c 'import pyspark; print(pyspark.__version__)')

.PHONY: venv plugin jars kafka build lint test test-stream test-slow demo smoke stream-demo bench-ps bench bench-sweeps bench-raw bench-stream clean distclean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -e ".[test]"
	touch $@

plugin: $(PLUGIN_JAR)

# Compiled against the jars of the pyspark installed in the venv, so the plugin
# always matches the Spark it runs in; rebuilt when a source or the venv changes.
$(PLUGIN_JAR): $(JAVA_SRC) $(VENV_STAMP)
	@test -n "$(JAVA_SRC)" || { echo "no Java sources under plugin/src/main/java" >&2; exit 1; }
	rm -rf $(PLUGIN_CLASSES)
	mkdir -p $(PLUGIN_CLASSES) $(JARS_DIR)
	pyspark_home="$$($(VPY) -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"; \
	javac --release 17 -Xlint:all,-path -Werror -cp "$$pyspark_home/jars/*" -d $(PLUGIN_CLASSES) $(JAVA_SRC)
	jar cf $@.tmp -C $(PLUGIN_CLASSES) .
	mv $@.tmp $@

jars: $(DELTA_STAMP)

$(DELTA_STAMP): pyproject.toml $(VENV_STAMP)
	@test -n "$(DELTA_VERSION)" || { echo "no delta-spark==X pin in pyproject.toml" >&2; exit 1; }
	rm -f $(JARS_DIR)/.delta-* $(DELTA_JARS)
	mkdir -p $(JARS_DIR)/delta-fetch
	minor="$$(echo '$(INSTALLED_SPARK)' | cut -d. -f1,2)"; \
	mvn -q dependency:copy -Dartifact=io.delta:delta-spark_$${minor}_2.13:$(DELTA_VERSION) \
		-DoutputDirectory=$(JARS_DIR)/delta-fetch && \
	mvn -q dependency:copy -Dartifact=io.delta:delta-storage:$(DELTA_VERSION) -DoutputDirectory=$(JARS_DIR)/delta-fetch && \
	mv $(JARS_DIR)/delta-fetch/delta-spark_$${minor}_2.13-$(DELTA_VERSION).jar $(JARS_DIR)/delta-spark.jar && \
	mv $(JARS_DIR)/delta-fetch/delta-storage-$(DELTA_VERSION).jar $(JARS_DIR)/delta-storage.jar && \
	echo "delta $(DELTA_VERSION) for spark $(INSTALLED_SPARK)" > $@
	rm -rf $(JARS_DIR)/delta-fetch
	test -s $(JARS_DIR)/delta-spark.jar && test -s $(JARS_DIR)/delta-storage.jar

build: venv plugin jars

# Kafka (issue 10, Sources). Two classpaths, kept apart:
# - $(KAFKA_JARS_DIR): spark-sql-kafka for the installed pyspark and the runtime dependencies pyspark does
#   not ship (kafka-clients, spark-token-provider-kafka, commons-pool2): every runtime dependency whose
#   artifactId has no jar in pyspark's jars/ is kept. The integration session puts them on spark.jars.
# - $(KAFKA_BROKER_DIR): a real Kafka broker (KRaft) with its full runtime classpath, run only as a child
#   JVM by integration/kafkakit.py and never put on Spark's classpath (its Scala, Jackson and
#   kafka-clients versions differ from Spark's). log4j-slf4j-impl gives its slf4j logs a backend.
# Each is fetched by mvn from a tiny generated pom; a stamp file makes a second run a no-op.
# spark-sql-kafka and spark-token-provider-kafka at the installed pyspark's version (4.2.0 serves both).
KAFKA_VERSION := 4.1.1
# The log4j of kafka_2.13 $(KAFKA_VERSION)'s dependencies.
KAFKA_LOG4J_VERSION := 2.24.3
KAFKA_JARS_DIR := $(JARS_DIR)/kafka
KAFKA_BROKER_DIR := build/kafka-broker
KAFKA_FETCH_DIR := build/kafka-fetch
KAFKA_STAMP := $(KAFKA_JARS_DIR)/.fetched
KAFKA_BROKER_STAMP := $(KAFKA_BROKER_DIR)/.fetched-$(KAFKA_VERSION)
kafka_dep = <dependency><groupId>$(word 1,$(subst :, ,$(1)))</groupId><artifactId>$(word 2,$(subst :, ,$(1)))</artifactId><version>$(word 3,$(subst :, ,$(1)))</version></dependency>
# $(1): dependencies, $(2): versions pinned for transitive ones (group:artifact:version, space-separated).
kafka_pom = <project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion><groupId>spark-ps.build</groupId><artifactId>kafka-fetch</artifactId><version>0</version><packaging>pom</packaging><dependencyManagement><dependencies>$(foreach d,$(2),$(call kafka_dep,$(d)))</dependencies></dependencyManagement><dependencies>$(foreach d,$(1),$(call kafka_dep,$(d)))</dependencies></project>

kafka: $(KAFKA_STAMP) $(KAFKA_BROKER_STAMP)

$(KAFKA_STAMP): $(VENV_STAMP)
	rm -rf $(KAFKA_FETCH_DIR)/spark $(KAFKA_JARS_DIR)
	mkdir -p $(KAFKA_FETCH_DIR)/spark $(KAFKA_JARS_DIR)
	printf '%s\n' '$(call kafka_pom,org.apache.spark:spark-sql-kafka-0-10_2.13:$(INSTALLED_SPARK),org.apache.spark:spark-token-provider-kafka-0-10_2.13:$(INSTALLED_SPARK))' \
		> $(KAFKA_FETCH_DIR)/spark/pom.xml
	mvn -q -B -f $(KAFKA_FETCH_DIR)/spark/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-Dmdep.useRepositoryLayout=true -DoutputDirectory=$(CURDIR)/$(KAFKA_FETCH_DIR)/spark/all
	pyspark_jars="$$($(VPY) -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')/jars"; \
	for jar in $$(find $(KAFKA_FETCH_DIR)/spark/all -name '*.jar'); do \
		artifact="$$(basename "$$(dirname "$$(dirname "$$jar")")")"; \
		compgen -G "$$pyspark_jars/$$artifact-[0-9]*.jar" > /dev/null || cp "$$jar" $(KAFKA_JARS_DIR)/; \
	done
	test -s $(KAFKA_JARS_DIR)/spark-sql-kafka-0-10_2.13-$(INSTALLED_SPARK).jar
	touch $@

$(KAFKA_BROKER_STAMP):
	rm -rf $(KAFKA_FETCH_DIR)/broker $(KAFKA_BROKER_DIR)
	mkdir -p $(KAFKA_FETCH_DIR)/broker $(KAFKA_BROKER_DIR)
	printf '%s\n' '$(call kafka_pom,org.apache.kafka:kafka_2.13:$(KAFKA_VERSION) org.apache.logging.log4j:log4j-slf4j-impl:$(KAFKA_LOG4J_VERSION),)' \
		> $(KAFKA_FETCH_DIR)/broker/pom.xml
	mvn -q -B -f $(KAFKA_FETCH_DIR)/broker/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory=$(CURDIR)/$(KAFKA_BROKER_DIR)
	test -s $(KAFKA_BROKER_DIR)/kafka_2.13-$(KAFKA_VERSION).jar
	touch $@

# pytest exits 5 when it collected nothing: that means the suite went missing, so fail.
# spark_ps, jobs, bench: their docstring examples (collected by the root conftest.py, as are integration/'s helpers');
# run right after tests/, they borrow its local[2] session (one session start fewer).
# Lint first: a style error fails the build before the ten minutes of tests.
LINT_PATHS := spark_ps tests integration jobs bench conftest.py
lint: venv
	$(VPY) -m ruff check $(LINT_PATHS)

# One pytest process: the Kafka test needs spark-sql-kafka on the driver JVM's classpath, which the process's
# first session fixes (sparkkit.new_session puts the jars on every session).
PYTEST = rc=0; $(VPY) -m pytest -x -q $(1) || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit "$$rc"

# Two pytest processes side by side, each with its own Spark sessions: tests/ but its streams, with the docstring
# examples of spark_ps/, jobs/ and bench/ (local[2]); and tests/streaming/ then integration/ (local-cluster,
# drivers and spark-submit applications of their own). One process kept the two cores 73% busy (a fresh clone's make test, 2026-12-02:
# 608 s of pytest, /proc/stat before and after): much of the suite waits on other processes. Each process puts the
# Kafka jars on its first session.
SECOND_LOG := build/pytest-streams-integration.log
test: build kafka lint
	@mkdir -p build
	@( $(call PYTEST,-p no:cacheprovider tests/streaming integration -m "not slow") ) > $(SECOND_LOG) 2>&1 & \
	other=$$!; rc=0; ( $(call PYTEST,tests spark_ps jobs bench --ignore=tests/streaming -m "not slow") ) || rc=$$?; \
	orc=0; wait $$other || orc=$$?; echo "--- pytest tests/streaming integration ($(SECOND_LOG)):"; cat $(SECOND_LOG); \
	[ "$$rc" -eq 0 ] && [ "$$orc" -eq 0 ]

# The whole-stream tests alone (also in make test), e.g. while working on spark_ps/streaming.
test-stream: build kafka
	$(call PYTEST,tests integration -m stream)

# The end-to-end tests kept out of make test for its ten minutes: a SIGKILLed training task, a fresh session
# loading saved models, FM parity with MLlib (two MLlib FM fits, ~80 s), two covered by faster tests.
test-slow: build
	$(call PYTEST,tests integration -m slow)

demo: build
	bash jobs/run_demo.sh

# CTR events into Delta, the streaming job on local[2] with the delayed-label join, SIGKILLed after two
# committed batches and restarted; fails unless every batch and impression was trained exactly once (~3 min).
stream-demo: build
	$(VPY) jobs/stream_demo.py

smoke: build
	SPARK_PS_DEMO_MASTER='local-cluster[2,1,1024]' SPARK_PS_DEMO_JOB=jobs/ps_smoke.py bash jobs/run_demo.sh

bench-ps: build
	$(VPY) -m bench.ps

# Head-to-head with MLlib on synthetic CTR data: the issue's whole matrix in one
# invocation, one results.json and one section of docs/benchmarks.md: 400k train /
# 100k test rows, d = 2^18 .. 2^30, spark-ps on local[2] and local-cluster[2,1,2048],
# MLlib (4 GB driver) on local[2], the numpy FTRL reference, the target checks.
# About 20 minutes on 2 cores (17-18 min, two runs of 2026-12-02). BENCH_DIMS / BENCH_ROWS /
# BENCH_MASTERS narrow it; BENCH_ARGS adds options (e.g. --budget-min 60).
BENCH_DIMS ?= 18,22,26,30
BENCH_ROWS ?= 400000
BENCH_TEST_ROWS ?= 100000
BENCH_MASTERS ?= local[2],local-cluster[2,1,2048]
BENCH_ARGS ?=
bench: build
	$(VPY) -m bench.mllib --dims $(BENCH_DIMS) --rows $(BENCH_ROWS) --test-rows $(BENCH_TEST_ROWS) \
		--masters '$(BENCH_MASTERS)' --timeout 600 $(BENCH_ARGS)
	$(VPY) -m bench.sweeps
	$(VPY) -m bench.profile_fit --defaults --repeats 2
	$(VPY) -m bench.scaling

# The full regParam x numEpochs sweeps under CrossValidator / TrainValidationSplit
# (make test runs two Param maps of each); a few minutes.
bench-sweeps: build
	$(VPY) -m bench.sweeps

# Raw columns to held-out AUC: FieldHasher + our LR against FeatureHasher + MLlib, on iPinYou and rawctr.
bench-raw: build
	$(VPY) -m bench.raw_parity

# Streaming training (issue 10, Speed): StreamingTrainer on local[2] at 50k/100k/200k-row micro-batches of
# synthetic CTR events (d = 2^22): rows/s, p50/p95 latency, snapshot and restart cost, driver memory
# from d = 2^18 to 2^30; MLlib's StreamingLogisticRegressionWithSGD and numpy FTRL on the same events.
# Writes bench/out/bench_stream/results.json and the bench-stream section of docs/benchmarks.md.
# BENCH_STREAM_ARGS adds options (e.g. --rows 400000 --mem-dims 18,30; --smoke for a tiny check).
BENCH_STREAM_ARGS ?=
bench-stream: build
	$(VPY) -m bench.stream $(BENCH_STREAM_ARGS)

clean:
	rm -rf build $(JARS_DIR) .pytest_cache integration/out bench/out spark-warehouse metastore_db derby.log
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .hypothesis
