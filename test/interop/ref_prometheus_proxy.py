#!/usr/bin/python3
"""Run the reference amphora's Prometheus proxy (python3-octavia's
octavia/cmd/prometheus_proxy.py, its request handler unchanged) on a
chosen address, reading a chosen exporter URL:

  ref_prometheus_proxy.py EXPORTER_URL LISTEN_HOST LISTEN_PORT

The reference's own main() always reads 127.0.0.1:9101 and serves
127.0.0.1:9102 inside amphora-haproxy; tests and benchmarks run it next
to ours, so only those two addresses are replaced. Prints "ready" once
listening; stops on SIGTERM/SIGINT. Run with Debian's /usr/bin/python3.
"""
import signal
import sys
import threading
from http.server import ThreadingHTTPServer

from octavia.cmd import prometheus_proxy as pp


def main():
    pp.METRICS_URL = sys.argv[1]
    httpd = ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])),
                                pp.PrometheusProxy)
    httpd.daemon_threads = True

    def stop(*_):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    httpd.serve_forever()


if __name__ == '__main__':
    main()
