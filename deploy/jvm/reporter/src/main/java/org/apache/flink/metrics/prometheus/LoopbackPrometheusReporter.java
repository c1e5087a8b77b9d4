package org.apache.flink.metrics.prometheus;

import io.prometheus.client.exporter.HTTPServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.Iterator;
import org.apache.flink.util.PortRange;

/**
 * Flink's {@link PrometheusReporter}, bound to one host address (127.0.0.1 by default) instead of every
 * interface. In Flink's package because the metric registry of {@link AbstractPrometheusReporter} is
 * package-private.
 */
public class LoopbackPrometheusReporter extends AbstractPrometheusReporter {
    private HTTPServer httpServer;
    private int port;

    LoopbackPrometheusReporter(String host, PortRange ports) {
        Iterator<Integer> candidates = ports.getPortsIterator();
        while (candidates.hasNext()) {
            int candidate = candidates.next();
            try {
                httpServer = new HTTPServer(new InetSocketAddress(host, candidate), this.registry);
                port = candidate;
                log.info("Started PrometheusReporter HTTP server on {}:{}.", host, candidate);
                break;
            } catch (IOException e) {
                log.debug("Could not start PrometheusReporter HTTP server on {}:{}.", host, candidate, e);
            }
        }
        if (httpServer == null) {
            throw new RuntimeException(
                    "Could not start PrometheusReporter HTTP server on " + host + " at any port of " + ports);
        }
    }

    int getPort() {
        return port;
    }

    @Override
    public void close() {
        if (httpServer != null) {
            httpServer.stop();
        }
        super.close();
    }
}
