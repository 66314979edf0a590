"""``parkwatch grafana export|push``: each action's arguments and body live in its own module."""

from __future__ import annotations

import argparse


def add_grafana_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    grafana = sub.add_parser("grafana", help="Grafana dashboards: export the JSON, push to Grafana")
    actions = grafana.add_subparsers(required=True, metavar="ACTION")

    from gateway.grafana import export, push

    exp = actions.add_parser("export", help="write the generated dashboard JSON files")
    export.add_arguments(exp)
    exp.set_defaults(handler=export.run)

    psh = actions.add_parser("push", help="upsert the datasource and dashboards into a running "
                                          "Grafana with a service-account token")
    push.add_arguments(psh)
    psh.set_defaults(handler=push.run)
