#!/usr/bin/python3
"""Render the amphora's /etc/rsyslog.d/10-rsyslog.conf with the Octavia
controller's own logging templater (python3-octavia's
LoggingJinjaTemplater, which the controller ships on the config drive).

Reads a JSON object of [amphora_agent] options on stdin, e.g.
  {"admin_log_targets": ["198.18.70.2:10514"],
   "tenant_log_targets": ["198.18.71.2:10514"],
   "log_protocol": "UDP", "administrative_log_facility": 1,
   "user_log_facility": 0, "forward_all_logs": false,
   "disable_local_log_storage": false}
and prints the configuration. Run with Debian's /usr/bin/python3.
"""
import json
import sys
import warnings

warnings.filterwarnings('ignore')

from oslo_config import cfg  # noqa: E402

from octavia.common import config as _octavia_config  # noqa: E402,F401
from octavia.common.jinja.logging import logging_jinja_cfg  # noqa: E402

CONF = cfg.CONF


def main():
    spec = json.load(sys.stdin)
    CONF([], project='octavia', default_config_files=[])
    for name, value in spec.items():
        CONF.set_override(name, value, group='amphora_agent')
    sys.stdout.write(
        logging_jinja_cfg.LoggingJinjaTemplater().build_logging_config())


if __name__ == '__main__':
    main()
