"""ISO 4217 currencies and their minor-unit exponents.

Amounts are integers in the minor unit, so a currency's exponent says nothing about the
integer itself; it matters where a decimal is shown or converted, and it decides which
currencies are accepted at all. The table lists active codes; funds codes and metals are left out.
"""

from __future__ import annotations

# Exponent 0: no minor unit.
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()  # noqa: SIM905
# Exponent 3.
_THREE = "BHD IQD JOD KWD LYD OMR TND".split()  # noqa: SIM905
# Exponent 4.
_FOUR = ("CLF", "UYW")
# Exponent 2: everything else that is active.
_TWO = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP
BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT
LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN
NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP
SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES
WST XCD YER ZAR ZMW ZWG
""".split()  # noqa: SIM905

EXPONENTS: dict[str, int] = {
    **{code: 2 for code in _TWO},
    **{code: 0 for code in _ZERO},
    **{code: 3 for code in _THREE},
    **{code: 4 for code in _FOUR},
}


def is_supported(code: str) -> bool:
    """True when ``code`` is an upper-case active ISO 4217 code."""
    return code in EXPONENTS


def exponent(code: str) -> int:
    """The minor-unit exponent of ``code`` (JPY 0, USD 2, KWD 3). Raises KeyError if unknown."""
    return EXPONENTS[code]
