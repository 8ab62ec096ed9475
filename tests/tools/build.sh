#!/usr/bin/env bash
# Placeholder until the real-component harness lands.
exit 0
