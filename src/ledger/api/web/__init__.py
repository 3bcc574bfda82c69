"""The All Sales web page at `/`: server-rendered Jinja templates, a little vendored JavaScript, no CDN.

`ROUTES` goes into the app's route list beside the API; the pages are left out of the OpenAPI schema.
"""

from __future__ import annotations

from pathlib import Path

from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from ledger.api.web import actions, pages

STATIC = Path(__file__).parent / "static"

ROUTES: list[ControllerRouterHandler] = [
    pages.signin_page,
    pages.signin,
    pages.signout,
    pages.template_csv,
    pages.all_sales,
    pages.export_csv,
    pages.order_detail,
    actions.ship_form,
    actions.cancel_form,
    actions.refund_form,
    actions.close_dispute_form,
    actions.restock_form,
    actions.void_form,
    actions.sync_item_form,
    actions.bulk_orders,
    actions.bulk_page,
    actions.bulk_upload,
    actions.failed_rows,
    create_static_files_router(
        path="/static", directories=[STATIC], include_in_schema=False, name="web-static"
    ),
]
