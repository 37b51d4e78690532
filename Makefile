# spark-ps build. Needs only python3.11, a JDK 17 and mvn on a fresh clone.
#
#   make build     venv + plugin jar + Delta jars
#   make test      build, then the fast tests, the local-cluster integration tests and the docstring examples
#   make demo      build, then jobs/run_demo.sh: spark-submit jobs/train.py (a9a, ours vs MLlib)
#   make smoke     build, then the push/pull smoke job on local-cluster[2,1,1024]
#   make bench-ps  build, then the shard throughput benchmark (python -m bench.ps)
#   make bench     build, then the head-to-head with MLlib (python -m bench.mllib), then bench-sweeps
#   make bench-sweeps  build, then the tuning sweeps moved out of make test (python -m bench.sweeps)
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

# Must match delta-spark in pyproject.toml (Delta 4.0 is built for Spark 4.0 / Scala 2.13).
DELTA_VERSION := 4.0.0
DELTA_JARS := $(JARS_DIR)/delta-spark_2.13-$(DELTA_VERSION).jar $(JARS_DIR)/delta-storage-$(DELTA_VERSION).jar

.PHONY: venv plugin jars build lint test test-stream demo smoke bench-ps bench bench-sweeps clean distclean

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

jars: $(DELTA_JARS)

$(JARS_DIR)/delta-%-$(DELTA_VERSION).jar:
	mkdir -p $(JARS_DIR)
	mvn -q dependency:copy -Dartifact=io.delta:delta-$*:$(DELTA_VERSION) -DoutputDirectory=$(JARS_DIR)
	test -s $@

build: venv plugin jars

# pytest exits 5 when it collected nothing: that means the suite went missing, so fail.
# spark_ps: the package's docstring examples (collected by the root conftest.py).
# Lint first: a style error fails the build before the ten minutes of tests.
LINT_PATHS := spark_ps tests integration jobs bench conftest.py
lint: venv
	$(VPY) -m ruff check $(LINT_PATHS)

test: build lint
	rc=0; $(VPY) -m pytest tests integration spark_ps -x -q -m "not stream" || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit "$$rc"

# Streaming fault tests: drivers in their own processes, SIGKILLed and restarted (several minutes).
test-stream: build
	rc=0; $(VPY) -m pytest integration -x -q -m stream || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit "$$rc"

demo: build
	bash jobs/run_demo.sh

smoke: build
	SPARK_PS_DEMO_MASTER='local-cluster[2,1,1024]' SPARK_PS_DEMO_JOB=jobs/ps_smoke.py bash jobs/run_demo.sh

bench-ps: build
	$(VPY) -m bench.ps

# Head-to-head with MLlib on synthetic CTR data: the issue's whole matrix in one
# invocation, one results.json and one section of docs/benchmarks.md: 400k train /
# 100k test rows, d = 2^18 .. 2^30, spark-ps on local[2] and local-cluster[2,1,2048],
# MLlib (4 GB driver) on local[2], the numpy FTRL reference, the target checks.
# About an hour on 2 cores. BENCH_DIMS / BENCH_ROWS / BENCH_MASTERS narrow it;
# BENCH_ARGS adds options (e.g. --budget-min 60).
BENCH_DIMS ?= 18,22,26,30
BENCH_ROWS ?= 400000
BENCH_TEST_ROWS ?= 100000
BENCH_MASTERS ?= local[2],local-cluster[2,1,2048]
BENCH_ARGS ?=
bench: build
	$(VPY) -m bench.mllib --dims $(BENCH_DIMS) --rows $(BENCH_ROWS) --test-rows $(BENCH_TEST_ROWS) \
		--masters '$(BENCH_MASTERS)' --timeout 600 $(BENCH_ARGS)
	$(VPY) -m bench.sweeps

# The full regParam x numEpochs sweeps under CrossValidator / TrainValidationSplit
# (make test runs two Param maps of each); a few minutes.
bench-sweeps: build
	$(VPY) -m bench.sweeps

clean:
	rm -rf build $(JARS_DIR) .pytest_cache integration/out bench/out spark-warehouse metastore_db derby.log
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .hypothesis
