package io.sparkps;

import org.apache.spark.api.plugin.DriverPlugin;
import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.SparkPlugin;

/**
 * Entry point named in {@code spark.plugins=io.sparkps.PSPlugin}.
 *
 * <p>The driver half keeps the registry of parameter-server sidecars and
 * mints the per-application secret; the executor half starts the sidecars
 * beside each executor and ties their lifetime to the executor JVM.
 */
public final class PSPlugin implements SparkPlugin {

    @Override
    public DriverPlugin driverPlugin() {
        return new PSDriverPlugin();
    }

    @Override
    public ExecutorPlugin executorPlugin() {
        return new PSExecutorPlugin();
    }
}
