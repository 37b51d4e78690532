package io.sparkps;

import java.io.Serializable;

/** Executor to driver: sidecar {@code index} of {@code executorId} is being stopped. */
public record SidecarUnregistration(String executorId, int index) implements Serializable {
}
