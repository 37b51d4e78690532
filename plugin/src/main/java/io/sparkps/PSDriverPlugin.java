package io.sparkps;

import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.spark.SparkContext;
import org.apache.spark.api.plugin.DriverPlugin;
import org.apache.spark.api.plugin.PluginContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerExecutorRemoved;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Driver half of the plugin: per-application secret and the registry of live sidecars.
 *
 * <p>Python reaches the registry through py4j as static methods
 * ({@link #registryJson()}, {@link #secret()}), because Spark does not expose
 * plugin instances. A static holder is sound since a JVM runs at most one
 * SparkContext; {@link #shutdown()} clears it so a later SparkContext in the
 * same JVM starts from an empty registry with a fresh secret.
 */
public final class PSDriverPlugin implements DriverPlugin {

    /**
     * Key of the secret in the extra conf Spark hands to every executor plugin.
     * Spark stores it in the SparkConf as
     * {@code spark.plugins.internal.conf.io.sparkps.PSPlugin.spark.ps.secret};
     * the word "secret" makes the default {@code spark.redaction.regex} hide
     * it in the UI and event logs.
     */
    static final String SECRET_KEY = "spark.ps.secret";

    private static final Logger LOG = LoggerFactory.getLogger(PSDriverPlugin.class);
    private static final int SECRET_BYTES = 32;

    /** The running application's registry, or null when no PSDriverPlugin is initialised. */
    private static volatile Registry current;

    private Registry registry;
    private SparkContext sc;
    private SparkListener listener;

    @Override
    public Map<String, String> init(SparkContext sc, PluginContext ctx) {
        byte[] raw = new byte[SECRET_BYTES];
        new SecureRandom().nextBytes(raw);
        String secret = HexFormat.of().formatHex(raw);
        this.registry = new Registry(secret);
        this.sc = sc;
        this.listener = new SparkListener() {
            @Override
            public void onExecutorRemoved(SparkListenerExecutorRemoved event) {
                // A dead executor's sidecars died with it (they exit on stdin EOF),
                // so routing to them would only produce connection errors.
                int dropped = registry.executorRemoved(event.executorId());
                if (dropped > 0) {
                    LOG.info("spark-ps: executor {} removed ({}); dropped {} sidecar(s) from the registry",
                            event.executorId(), event.reason(), dropped);
                }
            }
        };
        sc.addSparkListener(listener);
        current = registry;
        LOG.info("spark-ps: driver plugin initialised; waiting for sidecar registrations");
        return Map.of(SECRET_KEY, secret);
    }

    @Override
    public Object receive(Object message) {
        if (message instanceof SidecarRegistration reg) {
            if (registry.register(reg)) {
                LOG.info("spark-ps: registered sidecar {}/{} at {}:{} (pid {})",
                        reg.executorId(), reg.index(), reg.host(), reg.port(), reg.pid());
            } else {
                LOG.warn("spark-ps: ignored registration of sidecar {}/{}: executor already removed",
                        reg.executorId(), reg.index());
            }
        } else if (message instanceof SidecarUnregistration unreg) {
            registry.unregister(unreg);
            LOG.info("spark-ps: unregistered sidecar {}/{}", unreg.executorId(), unreg.index());
        } else {
            throw new IllegalArgumentException("spark-ps driver plugin got an unknown message type: "
                    + (message == null ? "null" : message.getClass().getName()));
        }
        return null; // one-way messages: Spark logs any non-null reply as unexpected
    }

    @Override
    public void shutdown() {
        if (registry != null && current == registry) {
            current = null;
        }
        if (sc != null && listener != null) {
            sc.removeSparkListener(listener);
            listener = null;
        }
    }

    /**
     * Live sidecars as a JSON array, sorted by (executorId, index).
     *
     * <p>Example: {@code [{"executorId":"0","index":0,"host":"127.0.0.1","port":41234,"pid":1234}]}.
     * Numeric executor ids sort numerically ("2" before "10"), so every caller
     * sees the same shard order for key routing.
     *
     * @throws IllegalStateException if the plugin is not running in this JVM
     */
    public static String registryJson() {
        return running().toJson();
    }

    /**
     * The per-application secret, hex-encoded.
     *
     * @throws IllegalStateException if the plugin is not running in this JVM
     */
    public static String secret() {
        return running().secret;
    }

    private static Registry running() {
        Registry r = current;
        if (r == null) {
            throw new IllegalStateException("the spark-ps driver plugin is not running in this JVM: start the "
                    + "SparkContext with spark.plugins=io.sparkps.PSPlugin (spark_ps.configure_spark_with_ps "
                    + "sets it)");
        }
        return r;
    }

    /** Registered sidecars of one application; every method is atomic with respect to the others. */
    private static final class Registry {
        private final String secret;
        private final Map<String, SidecarRegistration> byKey = new HashMap<>();
        /** Executor ids are never reused within an application, so a late registration can be rejected. */
        private final Set<String> removedExecutors = new HashSet<>();

        Registry(String secret) {
            this.secret = secret;
        }

        private static String key(String executorId, int index) {
            return executorId + "/" + index;
        }

        synchronized boolean register(SidecarRegistration reg) {
            if (removedExecutors.contains(reg.executorId())) {
                return false;
            }
            byKey.put(key(reg.executorId(), reg.index()), reg);
            return true;
        }

        synchronized void unregister(SidecarUnregistration unreg) {
            byKey.remove(key(unreg.executorId(), unreg.index()));
        }

        synchronized int executorRemoved(String executorId) {
            removedExecutors.add(executorId);
            int before = byKey.size();
            byKey.values().removeIf(reg -> reg.executorId().equals(executorId));
            return before - byKey.size();
        }

        String toJson() {
            List<SidecarRegistration> regs;
            synchronized (this) {
                regs = new ArrayList<>(byKey.values());
            }
            regs.sort(Comparator.comparing(SidecarRegistration::executorId, Registry::compareExecutorIds)
                    .thenComparingInt(SidecarRegistration::index));
            StringBuilder out = new StringBuilder("[");
            for (int i = 0; i < regs.size(); i++) {
                SidecarRegistration r = regs.get(i);
                if (i > 0) {
                    out.append(',');
                }
                out.append("{\"executorId\":");
                appendJsonString(out, r.executorId());
                out.append(",\"index\":").append(r.index());
                out.append(",\"host\":");
                appendJsonString(out, r.host());
                out.append(",\"port\":").append(r.port());
                out.append(",\"pid\":").append(r.pid());
                out.append('}');
            }
            return out.append(']').toString();
        }

        /** Numeric ids numerically, then non-numeric ones (e.g. "driver" in local mode) as strings. */
        static int compareExecutorIds(String a, String b) {
            boolean aNum = isDigits(a);
            boolean bNum = isDigits(b);
            if (aNum && bNum) {
                int byLength = Integer.compare(stripZeros(a).length(), stripZeros(b).length());
                return byLength != 0 ? byLength : stripZeros(a).compareTo(stripZeros(b));
            }
            if (aNum != bNum) {
                return aNum ? -1 : 1;
            }
            return a.compareTo(b);
        }

        private static boolean isDigits(String s) {
            return !s.isEmpty() && s.chars().allMatch(c -> c >= '0' && c <= '9');
        }

        private static String stripZeros(String digits) {
            int i = 0;
            while (i < digits.length() - 1 && digits.charAt(i) == '0') {
                i++;
            }
            return digits.substring(i);
        }

        private static void appendJsonString(StringBuilder out, String s) {
            out.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                    }
                }
            }
            out.append('"');
        }
    }
}
