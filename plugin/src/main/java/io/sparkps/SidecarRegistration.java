package io.sparkps;

import java.io.Serializable;

/**
 * Executor to driver: sidecar {@code index} of {@code executorId} is serving on {@code host:port}.
 *
 * <p>Sent through Spark's plugin RPC channel, which Java-serialises messages;
 * it therefore only carries plain values.
 */
public record SidecarRegistration(String executorId, int index, String host, int port, long pid)
        implements Serializable {
}
