"""Vietnamese personal names with rough real-world frequencies, for synthetic patients.

Family-name shares are approximate national figures (Nguyễn about 38 %, Trần 11 %, Lê 9.5 % ...).
Hoàng/Huỳnh and Vũ/Võ are the same names in northern and southern usage, so the southern form
is drawn for provinces from Đà Nẵng southwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fhir_server.synthetic.weighted import WeightedChoice

__all__ = ["PersonName", "draw_name"]

_FAMILY_SHARES: tuple[tuple[str, float], ...] = (
    ("Nguyễn", 38.4), ("Trần", 11.0), ("Lê", 9.5), ("Phạm", 7.0), ("Hoàng", 5.1),
    ("Phan", 4.5), ("Vũ", 3.9), ("Đặng", 2.1), ("Bùi", 2.0), ("Đỗ", 1.4), ("Hồ", 1.3),
    ("Ngô", 1.3), ("Dương", 1.0), ("Lý", 0.5), ("Đinh", 0.9), ("Trịnh", 0.6), ("Mai", 0.5),
    ("Đoàn", 0.6), ("Trương", 0.6), ("Lâm", 0.4), ("Cao", 0.4), ("Lương", 0.4), ("Hà", 0.4),
    ("Tạ", 0.2), ("Châu", 0.2), ("Phùng", 0.2), ("Tô", 0.2), ("Quách", 0.1), ("Kiều", 0.1),
)  # fmt: skip
_SOUTHERN_FORM = {"Hoàng": "Huỳnh", "Vũ": "Võ"}
_MIDDLE = {
    True: ("Văn", "Văn", "Văn", "Hữu", "Đức", "Minh", "Quốc", "Thành", "Công", "Xuân", "Gia"),
    False: ("Thị", "Thị", "Thị", "Ngọc", "Thu", "Thanh", "Minh", "Kim", "Mỹ", "Thùy", "Phương"),
}
_GIVEN = {
    True: (
        "An", "Bình", "Cường", "Dũng", "Đạt", "Hải", "Hiếu", "Hoàng", "Hùng", "Huy", "Khang",
        "Khoa", "Kiên", "Long", "Minh", "Nam", "Nghĩa", "Phong", "Phúc", "Quân", "Quang",
        "Sơn", "Tài", "Thắng", "Thành", "Tiến", "Toàn", "Trung", "Tú", "Tuấn", "Việt", "Vinh",
    ),
    False: (
        "Anh", "Châu", "Chi", "Dung", "Duyên", "Giang", "Hà", "Hạnh", "Hằng", "Hiền", "Hoa",
        "Hồng", "Hương", "Huyền", "Lan", "Linh", "Loan", "Mai", "My", "Ngân", "Ngọc", "Nhung",
        "Nga", "Oanh", "Phương", "Quỳnh", "Tâm", "Thảo", "Thủy", "Trang", "Vân", "Yến",
    ),
}  # fmt: skip
_FAMILY = WeightedChoice.of(_FAMILY_SHARES)
# Codes of the 2025 provinces from Đà Nẵng southwards, where Huỳnh and Võ are the usual forms.
_SOUTHERN_FROM_CODE = 48


@dataclass(frozen=True, slots=True)
class PersonName:
    """A Vietnamese name in its written order: family, middle, given."""

    family: str
    middle: str
    given: str

    @property
    def text(self) -> str:
        """The full name as written on a CCCD card."""
        return f"{self.family} {self.middle} {self.given}"


def draw_name(rng: random.Random, male: bool, province_code: str) -> PersonName:
    """A name for a person of the given sex living in the given 2025 province."""
    family = _FAMILY.draw(rng)
    if int(province_code) >= _SOUTHERN_FROM_CODE:
        family = _SOUTHERN_FORM.get(family, family)
    return PersonName(family, rng.choice(_MIDDLE[male]), rng.choice(_GIVEN[male]))
