"""The shared masking helpers: the examples services show, and properties over any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shequ.masking import mask_address, mask_email, mask_id_number, mask_name, mask_phone

CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)


def test_names_keep_only_the_first_character() -> None:
    assert mask_name("张三") == "张*"
    assert mask_name("张三丰") == "张**"
    assert mask_name("欧阳娜娜") == "欧***"
    assert mask_name(" 李四 ") == "李*"
    assert mask_name("") == ""


def test_phones_keep_the_prefix_and_the_last_four_digits() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("138-1234-5678") == "138****5678"
    assert mask_phone("1234567") == "*******"


def test_id_numbers_keep_four_characters_at_each_end() -> None:
    assert mask_id_number("110101199003078515") == "1101**********8515"
    assert mask_id_number("11010119900307851X") == "1101**********851X"
    assert mask_id_number("12345678") == "********"


def test_addresses_are_cut_to_the_compound() -> None:
    assert mask_address("清源新村6幢3单元502") == "清源新村***"
    assert mask_address("柳荫路8号院2门") == "柳荫路8号***"
    assert mask_address("清源里3幢2单元501") == "清源里***"


def test_an_address_without_a_compound_shows_at_most_half() -> None:
    assert mask_address("幸福大街东段") == "幸福大***"
    assert mask_address("幸福路") == "幸***"
    assert mask_address("") == ""


def test_emails_keep_the_first_character_and_the_domain() -> None:
    assert mask_email("zhang.san@example.cn") == "z***@example.cn"
    assert mask_email("a@b.cn") == "a***@b.cn"
    assert mask_email("not-an-address") == "**************"


@given(st.text(alphabet=CJK, min_size=2, max_size=6))
def test_a_masked_name_shows_one_character(name: str) -> None:
    masked = mask_name(name)
    assert masked[0] == name[0] and set(masked[1:]) == {"*"} and len(masked) == len(name)


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_a_masked_mobile_hides_the_middle_four(phone: str) -> None:
    masked = mask_phone(phone)
    assert masked == phone[:3] + "****" + phone[-4:]


@given(st.from_regex(r"[1-9][0-9]{16}[0-9X]", fullmatch=True))
def test_a_masked_id_number_hides_the_birth_date(number: str) -> None:
    masked = mask_id_number(number)
    assert masked[4:14] == "*" * 10 and len(masked) == 18


@given(st.text(min_size=1, max_size=40))
def test_masking_never_returns_a_whole_value_of_some_length(text: str) -> None:
    # Every helper hides part of anything longer than what it shows in the clear.
    for mask in (mask_name, mask_phone, mask_id_number, mask_email):
        masked = mask(text)
        assert "*" in masked or not masked


#: The last characters of every compound word the address masking stops at.
COMPOUND_ENDS = set("区村园寓院苑里号")


@given(st.text(alphabet=CJK.filter(lambda ch: ch not in COMPOUND_ENDS), min_size=1, max_size=20))
def test_an_address_without_a_compound_is_never_shown_whole(address: str) -> None:
    masked = mask_address(address)
    assert masked.endswith("***")
    assert len(masked.removesuffix("***")) <= len(address) // 2
