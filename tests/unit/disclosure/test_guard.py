"""The personal-data guard: examples per kind, false positives, and properties.

The check characters used to build valid data here are computed the way the
standards describe them (ISO 7064 MOD 11-2 by its recursive form, Luhn by
doubling from the right), not with the guard's own helpers, so a wrong
checksum in the guard cannot agree with itself.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shequ_services.disclosure import guard
from shequ_services.disclosure.guard import (
    BANK_CARD,
    EMAIL,
    HOUSE_NUMBER,
    MOBILE,
    PARTY_NAME,
    PLACEHOLDERS,
    RESIDENT_ID,
    FieldFinding,
    Finding,
    check_fields,
    field_errors,
    redact,
    redact_fields,
    scan,
)
from tests.support.personal_data import (
    FREE_TEXT,
    NAMES,
    PARTING,
    card,
    luhn_check_digit,
    personal_data,
    resident_id,
    traces,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def kinds(text: str, names: tuple[str, ...] = ()) -> list[str]:
    return [finding.kind for finding in scan(text, names)]


def found(text: str, names: tuple[str, ...] = ()) -> list[str]:
    return [text[f.start : f.end] for f in scan(text, names)]


# --- the checksum helpers agree with published examples -------------------------------


def test_the_test_check_digit_matches_the_published_sample_id() -> None:
    assert resident_id() == "11010519491231002X"


def test_the_test_luhn_digit_matches_a_well_known_test_card() -> None:
    assert card("411111111111111") == "4111111111111111"


def test_the_interface_names_the_eight_kinds_with_a_message_and_a_placeholder_each() -> None:
    expected = {
        "resident_id", "mobile", "landline", "email", "bank_card",
        "licence_plate", "party_name", "house_number",
    }  # fmt: skip
    assert set(guard.KINDS) == expected
    assert set(guard.MESSAGES) == expected
    assert set(PLACEHOLDERS) == expected


# --- resident ID numbers ---------------------------------------------------------------


def test_a_resident_id_with_its_check_character_is_found() -> None:
    text = "身份证号11010519491231002X，已核实"
    assert scan(text) == [Finding(RESIDENT_ID, 4, 22)]


def test_a_lowercase_x_check_character_is_accepted() -> None:
    assert kinds("证件 11010519491231002x") == [RESIDENT_ID]


def test_a_resident_id_split_six_eight_four_is_found_whole() -> None:
    number = resident_id("330106", "19870215", "123")
    spaced = f"{number[:6]} {number[6:14]} {number[14:]}"
    assert found(f"号码：{spaced}。") == [spaced]


def test_a_resident_id_with_a_wrong_check_character_is_not_an_id() -> None:
    number = resident_id("330106", "19870215", "123")
    wrong = number[:17] + ("0" if number[17] != "0" else "1")
    assert RESIDENT_ID not in kinds(f"号码{wrong}")


def test_an_id_shaped_number_with_an_impossible_birth_date_is_not_an_id() -> None:
    impossible = resident_id("330106", "19870230", "123")
    assert RESIDENT_ID not in kinds(f"号码{impossible}")


def test_an_id_inside_a_longer_run_of_digits_is_not_found() -> None:
    assert RESIDENT_ID not in kinds(f"流水号9{resident_id()[:-1]}0")


# --- mobile numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+8613812345678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "0086 13812345678",
        "(+86)13812345678",
        "86-138-1234-5678",
        "１３８１２３４５６７８",
    ],
)
def test_a_mobile_number_is_found_in_the_ways_people_write_it(written: str) -> None:
    assert found(f"联系电话：{written}，请回电") == [written]


def test_two_mobiles_separated_by_a_comma_are_two_findings() -> None:
    assert kinds("电话13812345678,13912345678") == [MOBILE, MOBILE]


def test_a_number_with_a_second_digit_below_three_is_not_a_mobile() -> None:
    assert kinds("编号12812345678") == []


def test_eleven_digits_inside_a_longer_run_are_not_a_mobile() -> None:
    assert MOBILE not in kinds("订单138123456789")
    assert MOBILE not in kinds("订单913812345678")


# --- landlines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "010-62345678",
        "(010)62345678",
        "（010）62345678",
        "021 62345678",
        "0755-2345678",
        "0755-23456789-801",
        "010-62345678转801",
        "01062345678",
        "010-62345678 ext 801",
        "010-6234 5678",
        "0755 234-5678",
    ],
)
def test_a_landline_is_found_with_its_area_code_and_extension(written: str) -> None:
    assert found(f"办公电话 {written}。") == [written]


def test_a_local_number_starting_with_one_is_not_a_landline() -> None:
    assert kinds("编号 010-12345678") == []


# --- e-mail addresses ------------------------------------------------------------------


def test_an_email_address_is_found_without_the_sentence_full_stop() -> None:
    assert found("来信请寄zhang.san+jw@mail.example.com.cn.") == [
        "zhang.san+jw@mail.example.com.cn"
    ]


def test_a_part_of_a_hyphen_joined_number_is_not_read_alone() -> None:
    assert scan("档案号2026-0113-13812345678") == []
    assert scan("档案号13812345678-2026-0113") == []


def test_a_mobile_used_as_a_mailbox_goes_with_the_address() -> None:
    assert scan("邮箱13812345678@qq.com") == [Finding(EMAIL, 2, 20)]


def test_an_at_sign_without_a_domain_is_not_an_email() -> None:
    assert kinds("@居委会 请查收 a@b") == []


# --- bank cards ------------------------------------------------------------------------


def test_a_luhn_valid_card_number_is_found_as_one_run() -> None:
    number = card("622202123456789012")
    assert found(f"卡号{number}已冻结") == [number]


@pytest.mark.parametrize("sep", [" ", "-"])
def test_a_card_in_groups_of_four_is_found_whole(sep: str) -> None:
    number = card("622848001234567")
    grouped = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    assert found(f"账户 {grouped} 户名") == [grouped]


def test_a_nineteen_digit_card_with_a_short_last_group_is_found_whole() -> None:
    number = card("622202123456789012")
    grouped = " ".join(number[i : i + 4] for i in range(0, 19, 4))
    assert found(f"卡号 {grouped}") == [grouped]


def test_a_card_number_that_fails_luhn_is_not_a_card() -> None:
    number = card("622848001234567")
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert kinds(f"卡号{wrong}") == []


def test_an_id_that_also_passes_luhn_is_reported_as_an_id() -> None:
    number = next(
        n
        for n in (resident_id("320102", "19900101", f"{s:03d}") for s in range(1000))
        if n[-1] != "X" and luhn_check_digit(n[:-1]) == n[-1]
    )
    assert kinds(f"号码{number}") == [RESIDENT_ID]


def test_two_cards_separated_by_a_space_leave_no_digit_of_either() -> None:
    first = " ".join(card("622848001234567")[i : i + 4] for i in range(0, 16, 4))
    second = " ".join(card("622202123456789012")[i : i + 4] for i in range(0, 19, 4))
    redacted = redact(f"卡号 {first} {second}").text
    assert not re.search(r"[0-9]", redacted)


# --- licence plates --------------------------------------------------------------------


@pytest.mark.parametrize(
    "plate",
    [
        "京A12345",
        "京A·12345",
        "沪B 1A234",
        "粤b12345",
        "粤BD12345",
        "粤B12345F",
        "沪A1234警",
        "京A1234学",
        "京·A12345",
        "京A-12345",
    ],
)
def test_a_licence_plate_is_found(plate: str) -> None:
    assert found(f"车辆{plate}停放在消防通道") == [plate]


@pytest.mark.parametrize("text", ["新iPhone发布", "京AB会议", "川ABCDE1", "京A1234"])
def test_a_province_and_letters_that_fall_short_of_a_plate_are_not_a_plate(text: str) -> None:
    assert kinds(text) == []


# --- names of parties ------------------------------------------------------------------


def test_a_known_name_is_found_wherever_it_occurs() -> None:
    assert kinds("张三与李四因噪音发生纠纷，张三已道歉", ("张三", "李四")) == [PARTY_NAME] * 3


def test_a_latin_name_is_found_whatever_its_case() -> None:
    assert found("complaint by ZHANG wei", ("Zhang Wei",)) == ["ZHANG wei"]


def test_a_name_the_producer_did_not_give_is_not_found() -> None:
    assert kinds("王五反映路灯不亮", ("张三",)) == []


def test_one_character_names_are_ignored_and_the_surname_form_stays() -> None:
    assert kinds("张某反映情况", ("张", " ")) == []


def test_a_known_name_inside_a_longer_known_name_goes_with_the_longer() -> None:
    assert found("张三丰来访", ("张三", "张三丰")) == ["张三丰"]


# --- house numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("和兴小区3号楼2单元501室漏水", "和兴小区漏水"),
        ("柳树路12号门前积水", "柳树路门前积水"),
        ("和兴小区5栋1单元302噪音", "和兴小区噪音"),
        ("和兴小区12号院3号楼", "和兴小区"),
        ("和兴小区3号楼501漏水", "和兴小区漏水"),
        ("3号楼2026年完成改造", f"{PLACEHOLDERS[HOUSE_NUMBER]}2026年完成改造"),
        ("住户在3-2-501", f"住户在{PLACEHOLDERS[HOUSE_NUMBER]}"),
        ("反映人住501室", f"反映人住{PLACEHOLDERS[HOUSE_NUMBER]}"),
        ("在 3号楼 2单元 501室 门口", f"在 {PLACEHOLDERS[HOUSE_NUMBER]} 门口"),
    ],
)
def test_a_house_number_is_reduced_to_the_compound_or_street(text: str, expected: str) -> None:
    assert redact(text).text == expected


def test_redaction_looks_again_at_text_a_removal_has_joined() -> None:
    result = redact("柳树路501室12号门前")
    assert result.text == "柳树路门前"
    assert result.counts == {HOUSE_NUMBER: 2}


def test_the_last_pass_uses_placeholders_so_nothing_is_joined_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard, "_MAX_PASSES", 1)
    result = redact("柳树路501室12号门前")
    assert result.text == f"柳树路{PLACEHOLDERS[HOUSE_NUMBER]}12号门前"
    assert scan(result.text) == []


def test_a_house_number_counts_once_however_many_parts_it_has() -> None:
    assert redact("和兴小区3号楼2单元501室").counts == {HOUSE_NUMBER: 1}


# --- what must not be flagged ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23",
        "2026年11月23日上午09:30召开",
        "时间 9:30:15 至 17:00",
        "共支出1,200元，结余¥12,345.50",
        "受理3件，办结12件，涉及45人",
        "事件I-20261123-0001已办结",
        "工单INC-20261123-0001、INC-20261123-0002",
        "满意率98.5%，同比上升12%",
        "2026年第3季度",
        "11月3号入户走访",
        "出租房屋3室2厅",
        "新建3栋楼，惠及120户",
        "12345热线转办",
        "邮编100000",
        "2026-11-23T09:30:00+08:00",
        "第2026112300001号",
    ],
)
def test_ordinary_figures_are_not_personal_data(text: str) -> None:
    assert scan(text) == []
    assert redact(text) == guard.Redaction(text=text, counts={})


# --- redaction, fields and the 422 ---------------------------------------------------


def test_redaction_uses_a_readable_placeholder_and_counts_per_kind() -> None:
    result = redact("张三电话13812345678，邮箱zs@example.com，张三住和兴小区3号楼", ("张三",))
    assert result.text == (
        "【已隐去：当事人姓名】电话【已隐去：手机号】，邮箱【已隐去：电子邮箱】，"
        "【已隐去：当事人姓名】住和兴小区"
    )
    assert result.counts == {PARTY_NAME: 2, MOBILE: 1, EMAIL: 1, HOUSE_NUMBER: 1}


def test_a_known_name_that_is_part_of_a_placeholder_does_not_redact_the_placeholder() -> None:
    once = redact("隐去电话13812345678", ("隐去",))
    assert once.counts == {PARTY_NAME: 1, MOBILE: 1}
    assert redact(once.text, ("隐去",)).text == once.text


def test_check_fields_names_nested_fields_by_dotted_path() -> None:
    values = {
        "title": "关于张三的调解结果",
        "body": {"summary": "联系13812345678", "items": ["无", "卡号" + card("622848001234567")]},
        "references": ["I-20261123-0001"],
        "count": 3,
        "public": True,
    }
    assert check_fields(values, ("张三",)) == [
        FieldFinding("title", PARTY_NAME),
        FieldFinding("body.summary", MOBILE),
        FieldFinding("body.items.1", BANK_CARD),
    ]


def test_check_fields_reports_each_kind_once_per_field() -> None:
    values = {"body": "13812345678 与 13912345678，张三、张三"}
    assert check_fields(values, ("张三",)) == [
        FieldFinding("body", MOBILE),
        FieldFinding("body", PARTY_NAME),
    ]


def test_a_key_holding_personal_data_is_named_by_its_redacted_form() -> None:
    findings = check_fields({"body": {"张三": "已调解"}}, ("张三",))
    assert findings == [FieldFinding("body.【已隐去：当事人姓名】", PARTY_NAME)]


def test_an_integer_holding_a_mobile_number_is_found() -> None:
    assert check_fields({"body": {"phone": 13812345678}}) == [FieldFinding("body.phone", MOBILE)]


def test_redact_fields_keeps_the_shape_and_counts_every_field() -> None:
    values = {
        "title": "张三反映",
        "body": {"summary": "电话13812345678", "tags": ["噪音", "李四"], "count": 3, "ok": None},
    }
    redacted, counts = redact_fields(values, ("张三", "李四"))
    assert redacted == {
        "title": "【已隐去：当事人姓名】反映",
        "body": {
            "summary": "电话【已隐去：手机号】",
            "tags": ["噪音", "【已隐去：当事人姓名】"],
            "count": 3,
            "ok": None,
        },
    }
    assert counts == {PARTY_NAME: 2, MOBILE: 1}


def test_redact_fields_keeps_two_redacted_keys_apart() -> None:
    redacted, counts = redact_fields({"body": {"张三": 1, "李四": 2}}, ("张三", "李四"))
    assert sorted(redacted["body"].values()) == [1, 2]
    assert counts == {PARTY_NAME: 2}


def test_field_errors_say_which_kind_each_field_holds_without_the_datum() -> None:
    errors = field_errors([FieldFinding("body.summary", MOBILE), FieldFinding("title", EMAIL)])
    assert set(errors) == {"body.summary", "title"}
    assert guard.MESSAGES[MOBILE] in errors["body.summary"][0]
    assert not re.search(r"[0-9]", str(errors))


# --- properties ------------------------------------------------------------------------
# The strategies and why they look as they do: tests/support/personal_data.py.


@PROPERTY
@given(data=personal_data(), before=FREE_TEXT, after=FREE_TEXT)
def test_no_trace_of_an_embedded_datum_survives_redaction(
    data: tuple[str, str, str, tuple[str, ...]], before: str, after: str
) -> None:
    kind, embedded, datum, names = data
    result = redact(before + embedded + after, names)
    for trace in traces(datum):
        assert trace not in result.text
    assert result.counts.get(kind, 0) >= 1


@PROPERTY
@given(
    data=personal_data(),
    before=FREE_TEXT,
    after=FREE_TEXT,
    other=FREE_TEXT,
    where=st.sampled_from(["title", "body.summary", "body.items.1", "references.0"]),
)
def test_check_fields_names_the_field_and_kind_of_an_embedded_datum(
    data: tuple[str, str, str, tuple[str, ...]], before: str, after: str, other: str, where: str
) -> None:
    kind, embedded, _, names = data
    assume(not any(name in other for name in names))
    document: dict = {
        "title": other,
        "body": {"summary": other, "items": [other, other]},
        "references": [other],
    }
    if where == "title":
        document["title"] = before + embedded + after
    elif where == "body.summary":
        document["body"]["summary"] = before + embedded + after
    elif where == "body.items.1":
        document["body"]["items"][1] = before + embedded + after
    else:
        document["references"][0] = before + embedded + after
    assert check_fields(document, names) == [FieldFinding(where, kind)]


@PROPERTY
@given(
    pieces=st.lists(st.tuples(personal_data(), PARTING), min_size=1, max_size=5),
    start=FREE_TEXT,
)
def test_redacting_twice_is_redacting_once(
    pieces: list[tuple[tuple[str, str, str, tuple[str, ...]], str]], start: str
) -> None:
    names = tuple(name for (_, _, _, known), _ in pieces for name in known)
    text = start + "".join(embedded + parting for (_, embedded, _, _), parting in pieces)
    once = redact(text, names)
    twice = redact(once.text, names)
    assert twice.text == once.text
    assert twice.counts == {}
    for (_, _, datum, _), _ in pieces:
        for trace in traces(datum):
            assert trace not in once.text


@PROPERTY
@given(data=personal_data(), before=FREE_TEXT, after=FREE_TEXT)
def test_redact_fields_leaves_no_trace_in_any_field(
    data: tuple[str, str, str, tuple[str, ...]], before: str, after: str
) -> None:
    kind, embedded, datum, names = data
    redacted, counts = redact_fields(
        {"title": "公示", "body": {"items": [before + embedded + after]}}, names
    )
    for trace in traces(datum):
        assert trace not in str(redacted)
    assert counts[kind] >= 1


def safe_figures() -> st.SearchStrategy[str]:
    """Numbers a notice is made of: dates, times, money, counts, ids, percentages, years."""
    day = st.dates(date(2000, 1, 1), date(2030, 12, 31))
    return st.one_of(
        day.map(lambda d: d.isoformat()),
        day.map(lambda d: f"{d.year}年{d.month}月{d.day}日"),
        st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59)),
        st.integers(0, 999_999).map(lambda n: f"{n:,}元"),
        st.builds(lambda y, f: f"¥{y:,}.{f:02d}", st.integers(0, 99_999), st.integers(0, 99)),
        st.builds(lambda n, unit: f"{n}{unit}", st.integers(0, 999), st.sampled_from("件人户次项")),
        st.builds(lambda d, n: f"I-{d:%Y%m%d}-{n:04d}", day, st.integers(0, 9999)),
        st.builds(lambda n, f: f"{n}.{f}%", st.integers(0, 100), st.integers(0, 9)),
        st.integers(1990, 2030).map(lambda y: f"{y}年"),
    )


@PROPERTY
@given(
    parts=st.lists(st.tuples(FREE_TEXT, safe_figures(), st.sampled_from("，。；、 ")), max_size=6),
    names=st.lists(NAMES, max_size=3),
)
def test_text_without_personal_data_comes_back_unchanged(
    parts: list[tuple[str, str, str]], names: list[str]
) -> None:
    text = "".join(lead + figure + stop for lead, figure, stop in parts)
    assume(not any(name in text for name in names))
    assert redact(text, names) == guard.Redaction(text=text, counts={})
    assert check_fields({"title": text, "body": {"summary": text}}, names) == []
