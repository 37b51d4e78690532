package io.sparkps;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.spark.SparkConf;
import org.apache.spark.SparkEnv;
import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.PluginContext;
import org.apache.spark.network.util.JavaUtils;
import org.apache.spark.storage.BlockManagerId;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import scala.Tuple2;

/**
 * Executor half of the plugin: starts the parameter-server sidecars of this
 * executor and makes sure they never outlive it.
 *
 * <p>Configuration (all optional):
 * <ul>
 *   <li>{@code spark.ps.serversPerExecutor} sidecars per executor, default 1; 0 disables.</li>
 *   <li>{@code spark.ps.python} interpreter; else {@code spark.pyspark.python}, else env
 *       {@code PYSPARK_PYTHON}, else {@code python3}: the PySpark workers' Python.</li>
 *   <li>{@code spark.ps.pythonPath} prepended to the sidecar's {@code PYTHONPATH}.</li>
 *   <li>{@code spark.ps.host} address the sidecars bind; default {@code $SPARK_LOCAL_IP}, else the
 *       executor's advertised host (see {@link #sidecarHost}).</li>
 *   <li>{@code spark.ps.startupTimeout} seconds (a plain number) or a Spark time
 *       string ({@code 90s}, {@code 2min}); default 60.</li>
 *   <li>{@code spark.ps.maxSidecarRestarts} restarts of dead sidecars per executor, default 3.</li>
 *   <li>{@code spark.ps.heartbeatTimeout} seconds or a Spark time string, default 6: a sidecar
 *       that prints no heartbeat for that long is killed and restarted (see below).</li>
 * </ul>
 *
 * <p>Every {@code spark.ps.*} conf (none is secret: the application secret is
 * in the plugin's own conf, and travels on stdin) is passed on to each sidecar
 * as {@code --conf key=value}. The sidecar reads its limits from them
 * ({@code spark_ps/server/settings.py}: {@code spark.ps.maxConnections},
 * {@code spark.ps.handshakeTimeout}, ...), validates them once and exits with
 * code 2 before its ready line if one is bad; adding a limit needs no change here.
 *
 * <p>Restarts: a sidecar that dies while its executor lives (killed, OOM) is
 * unregistered at once, started again (a new process, a new port, no tables)
 * and registered anew, so the driver's registry follows it. Whatever it held
 * is lost; the callers rebuild it (a stream from its Delta model store). At
 * most {@code spark.ps.maxSidecarRestarts} times per executor: a sidecar that
 * keeps dying stays down, with its cause in the executor log.
 *
 * <p>Heartbeats: a ready sidecar prints {@code SPARK_PS_ALIVE} every second
 * from its main thread. A watchdog checks every second, and SIGKILLs a
 * sidecar silent for {@code spark.ps.heartbeatTimeout}: it is frozen (SIGSTOP,
 * a stopped container) or wedged, and its clients would otherwise learn it
 * only at their socket timeouts (600 s during training). The kill closes its
 * sockets, so they fail at once, and the restart above follows. Six seconds
 * is six missed beats: a Python thread waits at most one switch interval
 * (5 ms) for the GIL, so only a stop or a long stall of the whole process gets
 * there. A watchdog round that itself ran late (a JVM pause) kills nothing.
 *
 * <p>Lifetime: the sidecar's stdin stays open until the executor stops. When
 * the executor JVM dies, even by SIGKILL, the kernel closes that pipe and the
 * sidecar exits on EOF. On an orderly stop, {@link #shutdown()} (or the JVM
 * shutdown hook, if Spark never calls it) closes stdin, sends SIGTERM, and
 * kills whatever is still running after a grace period.
 */
public final class PSExecutorPlugin implements ExecutorPlugin {

    static final String READY_PREFIX = "SPARK_PS_READY";
    private static final Pattern READY_LINE = Pattern.compile("SPARK_PS_READY port=(\\d+) pid=(\\d+)\\s*");
    private static final Logger LOG = LoggerFactory.getLogger(PSExecutorPlugin.class);
    private static final long STOP_GRACE_MS = 5_000;
    /** Bounds the stdout kept for error messages, in case a broken child floods it. */
    private static final int MAX_CAPTURED_LINES = 50;
    static final String HEARTBEAT_LINE = "SPARK_PS_ALIVE";
    private static final long WATCHDOG_PERIOD_MS = 1_000;

    private final List<Sidecar> sidecars = new ArrayList<>();
    private final AtomicBoolean stopped = new AtomicBoolean();
    private final AtomicInteger restarts = new AtomicInteger();
    /** Restarts run here, one at a time, never on the JDK's process-reaper threads. */
    private final ExecutorService restarter = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "spark-ps-sidecar-restarter");
        t.setDaemon(true);
        return t;
    });
    private final ScheduledExecutorService watchdog = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "spark-ps-sidecar-watchdog");
        t.setDaemon(true);
        return t;
    });
    private long heartbeatTimeoutMs;
    private long lastWatchNanos;
    private PluginContext ctx;
    private Thread shutdownHook;
    private String secret;
    private String pythonPath;
    private String host;
    private long timeoutMs;
    private int maxRestarts;

    @Override
    public void init(PluginContext ctx, Map<String, String> extraConf) {
        this.ctx = ctx;
        SparkConf conf = ctx.conf();
        int count = conf.getInt("spark.ps.serversPerExecutor", 1);
        if (count < 0) {
            throw new IllegalArgumentException("spark.ps.serversPerExecutor must be >= 0, got " + count);
        }
        if (count == 0) {
            LOG.info("spark-ps: spark.ps.serversPerExecutor=0, not starting sidecars on executor {}",
                    ctx.executorID());
            return;
        }
        secret = extraConf.get(PSDriverPlugin.SECRET_KEY);
        if (secret == null || secret.isEmpty()) {
            throw new IllegalStateException("spark-ps: executor " + ctx.executorID() + " got no secret from the "
                    + "driver plugin; the driver must run io.sparkps.PSPlugin too (spark.plugins)");
        }
        String python = resolvePython(conf);
        pythonPath = conf.get("spark.ps.pythonPath", "");
        timeoutMs = secondsOrTimeStringMs("spark.ps.startupTimeout", conf.get("spark.ps.startupTimeout", "60"));
        maxRestarts = conf.getInt("spark.ps.maxSidecarRestarts", 3);
        heartbeatTimeoutMs = secondsOrTimeStringMs("spark.ps.heartbeatTimeout",
                conf.get("spark.ps.heartbeatTimeout", "6"));
        host = sidecarHost(ctx);
        String executorId = ctx.executorID();

        // Installed before the first child exists, so no exit path can leave one behind.
        shutdownHook = new Thread(this::stopSidecars, "spark-ps-sidecar-reaper");
        Runtime.getRuntime().addShutdownHook(shutdownHook);

        List<SidecarRegistration> ready = new ArrayList<>();
        try {
            // Start all children first, then wait: their Python start-up overlaps.
            for (int i = 0; i < count; i++) {
                List<String> command = new ArrayList<>(List.of(python, "-m", "spark_ps.server.sidecar",
                        "--host", host, "--executor-id", executorId, "--index", Integer.toString(i)));
                command.addAll(sidecarConfArgs(conf));
                Sidecar sidecar = Sidecar.start(command, pythonPath, secret, executorId, i);
                synchronized (sidecars) {
                    // The reaper may have run meanwhile (JVM exiting during init); it
                    // only sees children already in the list, so this one stops itself.
                    if (stopped.get()) {
                        sidecar.requestStop();
                        throw new IllegalStateException("the executor is shutting down");
                    }
                    sidecars.add(sidecar);
                }
            }
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
            for (Sidecar sidecar : sidecars) {
                ready.add(sidecar.awaitReady(deadline, timeoutMs, host));
            }
        } catch (IOException | RuntimeException e) {
            stopSidecars();
            removeShutdownHook();
            throw new IllegalStateException("spark-ps: could not start the sidecars of executor " + executorId
                    + " with python '" + python + "': " + e.getMessage(), e);
        }
        for (SidecarRegistration reg : ready) {
            try {
                ctx.send(reg);
            } catch (IOException e) {
                stopSidecars();
                removeShutdownHook();
                throw new IllegalStateException("spark-ps: executor " + executorId
                        + " could not register its sidecar with the driver", e);
            }
        }
        for (Sidecar sidecar : snapshot()) {
            watch(sidecar);
        }
        lastWatchNanos = System.nanoTime();
        watchdog.scheduleWithFixedDelay(this::killSilentSidecars, WATCHDOG_PERIOD_MS, WATCHDOG_PERIOD_MS,
                TimeUnit.MILLISECONDS);
    }

    /** The watchdog's round: SIGKILL every live sidecar silent for longer than the heartbeat timeout. */
    private void killSilentSidecars() {
        long now = System.nanoTime();
        long sinceLastRound = now - lastWatchNanos;
        lastWatchNanos = now;
        if (stopped.get() || sinceLastRound > TimeUnit.MILLISECONDS.toNanos(3 * WATCHDOG_PERIOD_MS)) {
            return; // this round ran late (the JVM paused): the sidecars' beats may be unread, not missing
        }
        for (Sidecar sidecar : snapshot()) {
            long silentMs = TimeUnit.NANOSECONDS.toMillis(now - sidecar.lastBeatNanos);
            // Start-up is bounded by spark.ps.startupTimeout instead: imports alone can take seconds.
            boolean ready = sidecar.readyLine.isDone() && !sidecar.readyLine.isCompletedExceptionally();
            if (ready && sidecar.process.isAlive() && silentMs > heartbeatTimeoutMs) {
                LOG.error("spark-ps: sidecar {}/{} (pid {}) sent no heartbeat for {} ms (spark.ps.heartbeatTimeout "
                        + "= {} ms): frozen or wedged; killing it", sidecar.executorId, sidecar.index,
                        sidecar.process.pid(), silentMs, heartbeatTimeoutMs);
                sidecar.process.destroyForcibly(); // its onExit restarts it
            }
        }
    }

    private void watch(Sidecar sidecar) {
        sidecar.process.onExit().thenRunAsync(() -> restart(sidecar), restarter);
    }

    /** Replace a sidecar that exited while the executor runs: unregister, start anew, register. */
    private void restart(Sidecar dead) {
        if (stopped.get()) {
            return; // an orderly stop, not a death
        }
        LOG.warn("spark-ps: sidecar {}/{} (pid {}) exited with code {} while its executor runs",
                dead.executorId, dead.index, dead.process.pid(), dead.process.exitValue());
        try {
            ctx.send(new SidecarUnregistration(dead.executorId, dead.index));
        } catch (IOException | RuntimeException e) {
            LOG.warn("spark-ps: could not unregister dead sidecar {}/{}: {}", dead.executorId, dead.index,
                    e.toString());
        }
        int attempt = restarts.incrementAndGet();
        if (attempt > maxRestarts) {
            LOG.error("spark-ps: sidecar {}/{} not restarted: {} restarts on this executor already "
                    + "(spark.ps.maxSidecarRestarts)", dead.executorId, dead.index, maxRestarts);
            return;
        }
        Sidecar fresh = null;
        try {
            fresh = Sidecar.start(dead.command, pythonPath, secret, dead.executorId, dead.index);
            synchronized (sidecars) {
                if (stopped.get()) {
                    fresh.requestStop();
                    return;
                }
                sidecars.set(sidecars.indexOf(dead), fresh);
            }
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
            ctx.send(fresh.awaitReady(deadline, timeoutMs, host));
            LOG.warn("spark-ps: sidecar {}/{} restarted (restart {} of at most {})", dead.executorId, dead.index,
                    attempt, maxRestarts);
            watch(fresh);
        } catch (IOException | RuntimeException e) {
            LOG.error("spark-ps: could not restart sidecar {}/{}: {}", dead.executorId, dead.index, e.toString());
            if (fresh != null) {
                fresh.requestStop(); // half-started: never leave it behind
            }
        }
    }

    @Override
    public void shutdown() {
        if (!stopped.get()) {
            // Tell the driver first so it stops handing the shard out; best effort,
            // since the driver may already be gone when the executor stops.
            for (Sidecar sidecar : snapshot()) {
                try {
                    ctx.send(new SidecarUnregistration(sidecar.executorId, sidecar.index));
                } catch (IOException | RuntimeException e) {
                    LOG.info("spark-ps: could not unregister sidecar {}/{} (driver gone?): {}",
                            sidecar.executorId, sidecar.index, e.toString());
                }
            }
        }
        stopSidecars();
        removeShutdownHook();
    }

    private void removeShutdownHook() {
        if (shutdownHook != null) {
            try {
                Runtime.getRuntime().removeShutdownHook(shutdownHook);
            } catch (IllegalStateException e) {
                // The JVM is already shutting down; the hook runs stopSidecars, a no-op by now.
                LOG.debug("spark-ps: JVM shutting down, reaper hook left in place");
            }
        }
    }

    private List<Sidecar> snapshot() {
        synchronized (sidecars) {
            return new ArrayList<>(sidecars);
        }
    }

    /** Stop every child: EOF on stdin plus SIGTERM, then SIGKILL after the grace period. Idempotent. */
    private void stopSidecars() {
        if (!stopped.compareAndSet(false, true)) {
            return;
        }
        restarter.shutdownNow();
        watchdog.shutdownNow();
        List<Sidecar> all = snapshot();
        for (Sidecar sidecar : all) {
            sidecar.requestStop();
        }
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(STOP_GRACE_MS);
        for (Sidecar sidecar : all) {
            sidecar.awaitStopOrKill(deadline);
        }
    }

    /**
     * Address the sidecars bind and advertise: {@code spark.ps.host}, else
     * {@code $SPARK_LOCAL_IP} (Spark's per-node bind address), else the host
     * this executor's block manager advertises, else {@code ctx.hostname()}.
     *
     * <p>SPARK_LOCAL_IP comes before the executor's hostname because that name
     * can be a stale JVM-wide value: a local-mode SparkContext sets Spark's
     * custom hostname to "localhost", and local-cluster workers started later
     * in the same JVM inherit it. {@code ctx.hostname()} is last because it
     * reads the RPC server address, which executors lack (their RpcEnv is
     * client-only, so it throws there).
     */
    static String sidecarHost(PluginContext ctx) {
        String configured = ctx.conf().get("spark.ps.host", "").trim();
        if (!configured.isEmpty()) {
            return configured;
        }
        String localIp = System.getenv("SPARK_LOCAL_IP");
        if (localIp != null && !localIp.isBlank()) {
            return localIp.trim();
        }
        SparkEnv env = SparkEnv.get();
        BlockManagerId id = env == null || env.blockManager() == null ? null : env.blockManager().blockManagerId();
        if (id != null && id.host() != null && !id.host().isEmpty()) {
            return id.host();
        }
        return ctx.hostname();
    }

    /** {@code --conf spark.ps.<key>=<value>} for every {@code spark.ps.*} conf, sorted; never a secret. */
    static List<String> sidecarConfArgs(SparkConf conf) {
        List<String> args = new ArrayList<>();
        Tuple2<String, String>[] entries = conf.getAllWithPrefix("spark.ps.");
        Arrays.sort(entries, Comparator.comparing((Tuple2<String, String> e) -> e._1()));
        for (Tuple2<String, String> entry : entries) {
            if (entry._1().toLowerCase(Locale.ROOT).contains("secret")) {
                continue; // belt and braces: the secret is not a spark.ps.* conf, and must never reach argv
            }
            args.add("--conf");
            args.add("spark.ps." + entry._1() + "=" + entry._2());
        }
        return args;
    }

    static String resolvePython(SparkConf conf) {
        for (String key : new String[] {"spark.ps.python", "spark.pyspark.python"}) {
            String value = conf.get(key, "").trim();
            if (!value.isEmpty()) {
                return value;
            }
        }
        String env = System.getenv("PYSPARK_PYTHON");
        return env != null && !env.isBlank() ? env.trim() : "python3";
    }

    /** A plain number means seconds (what Python passes); anything else is a Spark time string. */
    static long secondsOrTimeStringMs(String key, String value) {
        String v = value.trim();
        long ms;
        try {
            ms = Math.round(Double.parseDouble(v) * 1000.0);
        } catch (NumberFormatException notANumber) {
            ms = JavaUtils.timeStringAsMs(v);
        }
        if (ms <= 0) {
            throw new IllegalArgumentException(key + " must be positive, got '" + value + "'");
        }
        return ms;
    }

    /** One child process and the thread that reads its stdout. */
    private static final class Sidecar {
        final String executorId;
        final int index;
        final List<String> command;
        final Process process;
        final OutputStream stdin;
        final CompletableFuture<String> readyLine = new CompletableFuture<>();
        final List<String> captured = new ArrayList<>();
        /** When stdout last gave a line (a heartbeat or the ready line). */
        volatile long lastBeatNanos = System.nanoTime();

        private Sidecar(List<String> command, Process process, String executorId, int index) {
            this.command = command;
            this.process = process;
            this.stdin = process.getOutputStream();
            this.executorId = executorId;
            this.index = index;
        }

        static Sidecar start(List<String> command, String pythonPath, String secret, String executorId, int index)
                throws IOException {
            ProcessBuilder pb = new ProcessBuilder(command)
                    .redirectInput(ProcessBuilder.Redirect.PIPE)
                    .redirectOutput(ProcessBuilder.Redirect.PIPE)
                    .redirectError(ProcessBuilder.Redirect.INHERIT);
            if (!pythonPath.isEmpty()) {
                String existing = pb.environment().get("PYTHONPATH");
                pb.environment().put("PYTHONPATH", existing == null || existing.isEmpty()
                        ? pythonPath : pythonPath + File.pathSeparator + existing);
            }
            Process process;
            try {
                process = pb.start();
            } catch (IOException e) {
                throw new IOException("cannot run " + String.join(" ", command) + ": " + e.getMessage(), e);
            }
            Sidecar sidecar = new Sidecar(command, process, executorId, index);
            Thread pump = new Thread(sidecar::pumpStdout, "spark-ps-sidecar-" + executorId + "-" + index + "-stdout");
            pump.setDaemon(true);
            pump.start();
            try {
                // The secret travels on stdin, never argv, where any local user could read it.
                // stdin then stays open: its EOF is how the child learns the executor died.
                sidecar.stdin.write((secret + "\n").getBytes(StandardCharsets.US_ASCII));
                sidecar.stdin.flush();
            } catch (IOException e) {
                // The child died before reading; awaitReady reports why, with its output.
                LOG.warn("spark-ps: could not write the secret to sidecar {}/{}: {}", executorId, index, e.toString());
            }
            return sidecar;
        }

        /**
         * Reads stdout for the whole life of the child. After the handshake it keeps
         * draining (and logging) so a chatty child can never block on a full pipe.
         */
        private void pumpStdout() {
            try (BufferedReader reader = new BufferedReader(
                    new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = reader.readLine()) != null) {
                    lastBeatNanos = System.nanoTime();
                    if (line.equals(HEARTBEAT_LINE)) {
                        continue;
                    }
                    if (!readyLine.isDone() && line.startsWith(READY_PREFIX)) {
                        readyLine.complete(line);
                    } else {
                        LOG.warn("spark-ps: sidecar {}/{} stdout: {}", executorId, index, line);
                        synchronized (captured) {
                            if (captured.size() < MAX_CAPTURED_LINES) {
                                captured.add(line);
                            }
                        }
                    }
                }
            } catch (IOException e) {
                LOG.debug("spark-ps: stdout of sidecar {}/{} closed: {}", executorId, index, e.toString());
            }
            readyLine.completeExceptionally(new IOException("stdout closed before the handshake"));
        }

        SidecarRegistration awaitReady(long deadlineNanos, long timeoutMs, String host) throws IOException {
            String line;
            try {
                line = readyLine.get(Math.max(0, deadlineNanos - System.nanoTime()), TimeUnit.NANOSECONDS);
            } catch (TimeoutException e) {
                throw new IOException(describe("did not print '" + READY_PREFIX + " port=<port> pid=<pid>' within "
                        + timeoutMs + " ms"));
            } catch (ExecutionException e) {
                String status;
                try {
                    // stdout closed, so the child is exiting; give it a moment to be reaped for its code.
                    status = process.waitFor(STOP_GRACE_MS, TimeUnit.MILLISECONDS)
                            ? "exited with code " + process.exitValue() : "closed its stdout";
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    status = "closed its stdout";
                }
                throw new IOException(describe(status + " before the handshake"));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException(describe("start-up was interrupted"));
            }
            Matcher m = READY_LINE.matcher(line);
            if (!m.matches()) {
                throw new IOException(describe("printed a malformed handshake: '" + line + "'"));
            }
            int port = Integer.parseInt(m.group(1));
            long pid = Long.parseLong(m.group(2));
            if (pid != process.pid()) {
                // A wrapper script that forks instead of exec'ing; the handshake pid is the server.
                LOG.warn("spark-ps: sidecar {}/{} reports pid {} but the started process is {}",
                        executorId, index, pid, process.pid());
            }
            LOG.info("spark-ps: sidecar {}/{} ready on {}:{} (pid {})", executorId, index, host, port, pid);
            return new SidecarRegistration(executorId, index, host, port, pid);
        }

        private String describe(String what) {
            List<String> out;
            synchronized (captured) {
                out = new ArrayList<>(captured);
            }
            return "sidecar " + index + " of executor " + executorId + " (" + String.join(" ", command) + ") "
                    + what + "; its stdout: " + (out.isEmpty() ? "<nothing>" : String.join(" | ", out))
                    + "; its stderr is in this executor's stderr log";
        }

        void requestStop() {
            try {
                stdin.close();
            } catch (IOException e) {
                LOG.debug("spark-ps: closing stdin of sidecar {}/{}: {}", executorId, index, e.toString());
            }
            process.destroy();
        }

        void awaitStopOrKill(long deadlineNanos) {
            try {
                if (process.waitFor(Math.max(0, deadlineNanos - System.nanoTime()), TimeUnit.NANOSECONDS)) {
                    return;
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            LOG.warn("spark-ps: sidecar {}/{} (pid {}) ignored SIGTERM; killing it", executorId, index, process.pid());
            process.destroyForcibly();
        }
    }
}
