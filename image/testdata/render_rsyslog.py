#!/usr/bin/python3
"""Render /etc/rsyslog.d/10-rsyslog.conf as the Octavia controller does
(python3-octavia's LoggingJinjaTemplater, which ComputeCreate puts on the
config drive).

Reads a JSON spec on stdin and prints the configuration:
  {"tenant_log_targets": ["198.18.0.65:5140"], "admin_log_targets": [...],
   "log_protocol": "UDP"}
Run with Debian's /usr/bin/python3.
"""
import json
import sys
import warnings

warnings.filterwarnings('ignore')

from oslo_config import cfg  # noqa: E402

from octavia.common import config as _octavia_config  # noqa: E402,F401
from octavia.common.jinja.logging import logging_jinja_cfg  # noqa: E402

spec = json.load(sys.stdin)
for opt in ('tenant_log_targets', 'admin_log_targets', 'log_protocol'):
    if opt in spec:
        cfg.CONF.set_override(opt, spec[opt], group='amphora_agent')
sys.stdout.write(logging_jinja_cfg.LoggingJinjaTemplater().build_logging_config())
