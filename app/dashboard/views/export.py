"""Export: bundle an approved ticket (`ticketlab export` as a background job), show a bundle's manifest,
verify it (`verify_bundle`) and download it as a zip."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from app.dashboard import data, governance, verdict_line, widgets
from pruning import settings
from pruning.errors import TicketLabError

st.title("Export")

gov = governance.modules()

tickets = data.tickets()
exports_dir = settings.state_dir() / "exports"

left, right = st.columns([3, 2])
with left:
    st.subheader("Export a ticket")
    if tickets.empty:
        widgets.first_steps()
    else:
        unreviewed = st.checkbox("also offer tickets that are not approved (exported with --unreviewed; the manifest "
                                 "and model card say so)", key="exp_unreviewed")
        pool = tickets if unreviewed else tickets[tickets["review"] == "approved"]
        if pool.empty:
            st.info("No approved ticket yet: approve one on the Review page first.")
        else:
            tid = widgets.ticket_picker(pool, "ticket", key="exp_ticket", query_param="ticket",
                                        why_not="it is not approved (tick “also offer tickets that are not "
                                                "approved” to export it unreviewed).")
            if tid is None:
                st.stop()
            verdict_line.show(tid)
            fmt = st.selectbox("format", list(gov.export.FORMATS), key="exp_format",
                               index=list(gov.export.FORMATS).index("masks") if "masks" in gov.export.FORMATS else 0,
                               help="masks: the ticket only · masked-weights: a stock checkpoint with zeros baked in · "
                                    "materialized: the physically smaller model (structured tickets)")
            out = st.text_input("bundle directory", value=str(exports_dir / f"{tid}-{fmt}"), key=f"exp_out_{tid}_{fmt}")
            overwrite = st.checkbox("replace an earlier bundle there", key="exp_overwrite")
            if tickets.set_index("id").loc[tid, "review"] == "approved":
                governance.signed_export(tid, fmt, out, overwrite)  # signed by the approving reviewer, here
            elif st.button("Export in the background (unsigned)", type="primary", key="exp_go"):
                if "export" not in widgets.cli_parsers():
                    st.error("the `ticketlab export` command is not installed.")
                else:
                    argv = ["export", tid, "--out", out, "--format", fmt]
                    argv += (["--unreviewed"] if unreviewed and tickets.set_index("id").loc[tid, "review"] != "approved"
                             else []) + (["--overwrite"] if overwrite else []) + widgets.json_flag("export")
                    widgets.start_job(argv, label=f"export {tid[:10]} as {fmt}", kind="export")
    widgets.jobs_panel(kind="export", limit=3, title=None)


@st.cache_data(max_entries=64, show_spinner=False)
def _manifest(path: str, mtime: int) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def _zip(root: Path) -> bytes:
    from app.dashboard.bundle_zip import zip_bundle

    return zip_bundle(root, exports_dir)  # only bundles under the state folder; links never followed


with right:
    st.subheader("Bundles")
    bundles = sorted((p for p in exports_dir.glob("*") if (p / "manifest.json").is_file()),
                     key=lambda p: p.stat().st_mtime, reverse=True) if exports_dir.exists() else []
    other = st.text_input("or a bundle directory elsewhere", key="exp_other")
    if other.strip():
        bundles = [Path(other.strip()).expanduser()] + bundles
    if not bundles:
        st.caption(f"No bundles under {exports_dir} yet.")
        st.stop()
    chosen = st.selectbox("bundle", bundles, format_func=lambda p: p.name, key="exp_bundle")
    if not (chosen / "manifest.json").is_file():
        st.error(f"{chosen} is not a Ticket Lab bundle: no manifest.json.", icon=":material/warning:")
        st.stop()
    try:
        manifest = _manifest(str(chosen), (chosen / "manifest.json").stat().st_mtime_ns)
    except (OSError, json.JSONDecodeError) as e:
        st.error(f"{chosen / 'manifest.json'} cannot be read ({e}): the bundle is damaged.", icon=":material/warning:")
        st.stop()
    review = manifest.get("review") or {}
    deployer = manifest.get("deployer") or {}
    size = deployer.get("on_disk_bytes") or 0
    shown = f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size / 1e3:,.1f} kB"
    bundle_ticket = (manifest.get("ticket") or {}).get("id", "?")
    st.markdown(f"ticket `{bundle_ticket}` · format **{manifest.get('bundle_format', '?')}**"
                f" · review in the manifest **{review.get('status', '?')}**"
                + (" with override" if review.get("override") else "")
                + f"  \n{shown} on disk · {len(manifest.get('files') or {})} files")
    if bundle_ticket in set(tickets["id"]):
        verdict_line.show(bundle_ticket)  # the ticket's state now, which may have moved on since the export
    if isinstance(deployer.get("loader"), dict) and deployer["loader"].get("how"):
        st.caption(f"load with {deployer['loader']['how']}")
    governance.bundle_status(chosen)  # hashes, ticket id, signature and signer, with the ledger's trusted keys
    from app.dashboard import serving_panel

    serving_panel.show(chosen, manifest)  # the shipped artifact and its newest serve-check (helper i20's block)
    from app.dashboard.bundle_zip import zippable

    try:
        zippable(chosen, exports_dir)
    except TicketLabError as e:
        st.caption(str(e))
    else:
        st.download_button("Download as zip", data=lambda: _zip(chosen), file_name=f"{chosen.name}.zip",
                           mime="application/zip", key="exp_zip", on_click="ignore")
    with st.expander("manifest.json", expanded=False):
        st.json(manifest, expanded=1)
