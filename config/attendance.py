"""The ``attendance`` section of central.yaml: how passes become visits."""

from pydantic import Field

from config.base import Section


class AttendanceSection(Section):
    """How central turns granted passes into visits, days and who is on site (docs/attendance.md)."""

    max_visit_hours: float = Field(
        16.0, ge=1, le=72,
        description="A visit whose exit was never seen ends, flagged missing_exit, this many hours after its "
        "entry; 'report onsite' also forgets an entry this old.  Longer than the longest shift.",
    )
