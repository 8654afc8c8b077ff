"""The questions `bench/llm_quality.py` asks each candidate LLM: everyday facts a voice assistant is
asked, phrased as they are spoken, each with the answers that count and the ones that must not
appear (so an answer that lists every option is not rewarded).

Forms are compared after the scorer's normalisation (`llm_quality.normalise`): case, punctuation,
number words and Chinese numerals are folded, so "8" and "eight", "8" and "八" are the same form;
both are written out where a reader would expect them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    """One spoken question, in `language` ("en" or "zh"), and the forms that decide its answer."""

    language: str
    prompt: str
    accept: tuple[str, ...]
    """At least one of these must appear in the answer (a whole word or number)."""
    reject: tuple[str, ...] = ()
    """None of these may appear (a wrong answer given beside the right one)."""


def en(prompt: str, accept: tuple[str, ...], reject: tuple[str, ...] = ()) -> Question:
    return Question("en", prompt, accept, reject)


def zh(prompt: str, accept: tuple[str, ...], reject: tuple[str, ...] = ()) -> Question:
    return Question("zh", prompt, accept, reject)


ENGLISH = (
    # Capitals and places
    en("What's the capital of France?", ("Paris",)),
    en("Um, what is the capital of Japan?", ("Tokyo",)),
    en("What's the capital city of Italy?", ("Rome",)),
    en("Do you know the capital of Germany?", ("Berlin",)),
    en("What is the capital of Spain?", ("Madrid",)),
    en("Hey, what's the capital of Canada?", ("Ottawa",)),
    en("What's the capital of Australia?", ("Canberra",)),
    en("In which country are the pyramids of Giza?", ("Egypt",)),
    en("What's the biggest country in the world by area?", ("Russia",)),
    en("What language do people speak in Brazil?", ("Portuguese",)),
    en("What's the largest ocean on Earth?", ("Pacific",)),
    en("What's the tallest mountain in the world?", ("Everest",)),
    en("How many continents are there?", ("7", "seven")),
    # Animals and nature
    en("How many legs does a spider have?", ("8", "eight"), ("4 legs", "6 legs", "four legs", "six legs")),
    en("How many legs does an insect have?", ("6", "six"), ("4 legs", "8 legs", "four legs", "eight legs")),
    en("Which animal is called the king of the jungle?", ("lion",)),
    en("What do bees make?", ("honey",)),
    en("What do you call a baby cat?", ("kitten",)),
    en("What's the biggest animal in the world?", ("blue whale",)),
    en("What gas do plants take in from the air?", ("carbon dioxide", "CO2")),
    en("What's the chemical formula for water?", ("H2O",)),
    # Science and space
    en("At what temperature does water boil, in Celsius?", ("100", "one hundred")),
    en("Um, at what temperature does water freeze in Celsius?", ("0", "zero")),
    en("What's the freezing point of water in Fahrenheit?", ("32", "thirty-two")),
    en("Which planet is the largest in our solar system?", ("Jupiter",)),
    en("Which planet is closest to the sun?", ("Mercury",)),
    en("What planet do we live on?", ("Earth",)),
    en("Who was the first person to walk on the moon?", ("Armstrong",)),
    # Time and calendar
    en("How many days are there in a leap year?", ("366", "three hundred sixty-six")),
    en("How many days are in a week?", ("7", "seven")),
    en("How many months are there in a year?", ("12", "twelve")),
    en("How many hours are in a day?", ("24", "twenty-four")),
    en("How many minutes are in an hour?", ("60", "sixty")),
    en("So how many seconds are there in a minute?", ("60", "sixty")),
    # Arithmetic
    en("What is seven times eight?", ("56", "fifty-six")),
    en("What's twelve plus fifteen?", ("27", "twenty-seven")),
    en("Um, what's a hundred minus thirty?", ("70", "seventy")),
    en("What is nine times nine?", ("81", "eighty-one")),
    en("What's half of fifty?", ("25", "twenty-five")),
    en("What's twenty divided by four?", ("5", "five")),
    en("Quick one, what's three plus four?", ("7", "seven")),
    en("What is the square root of sixty-four?", ("8", "eight")),
    en("What's ten percent of two hundred?", ("20", "twenty")),
    # Units
    en("How many centimetres are in a metre?", ("100", "one hundred")),
    en("How many grams are in a kilogram?", ("1000", "one thousand")),
    en("How many metres are in a kilometre?", ("1000", "one thousand")),
    en("How many inches are in a foot?", ("12", "twelve")),
    en("How many ounces are in a pound?", ("16", "sixteen")),
    # Shapes and counting
    en("How many sides does a triangle have?", ("3", "three"), ("4 sides", "four sides")),
    en("How many sides does a hexagon have?", ("6", "six"), ("5 sides", "8 sides")),
    en("How many wheels does a bicycle have?", ("2", "two"), ("3 wheels", "4 wheels")),
    en("How many strings does a normal guitar have?", ("6", "six")),
    en("How many players does a football team have on the pitch?", ("11", "eleven")),
    # People and culture
    en("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    en("Who painted the Mona Lisa?", ("Leonardo", "da Vinci")),
    en("What's the main ingredient in guacamole?", ("avocado", "avocados")),
    # Words and colours
    en("What's the opposite of hot?", ("cold",)),
    en("What's the opposite of up?", ("down",)),
    en("What colour do you get when you mix blue and yellow?", ("green",)),
    en("What colour do you get if you mix red and white?", ("pink",)),
    en("What colour is the sky on a clear day?", ("blue",)),
    en("What colour are bananas when they're ripe?", ("yellow",)),
)

CHINESE = (
    zh("嗯，法国的首都是哪里？", ("巴黎",)),
    zh("日本的首都是哪个城市？", ("东京",)),
    zh("中国的首都是哪里？", ("北京",)),
    zh("蜘蛛有几条腿？", ("八", "8"), ("六条", "6条", "四条", "4条")),
    zh("一年有几个月？", ("十二", "12")),
    zh("一个星期有几天？", ("七", "7")),
    zh("一天有多少个小时？", ("二十四", "24")),
    zh("一小时有多少分钟？", ("六十", "60")),
    zh("水在多少摄氏度会沸腾？", ("一百", "100")),
    zh("七乘以八等于多少？", ("五十六", "56")),
    zh("三加五等于几？", ("八", "8")),
    zh("一百减去二十是多少？", ("八十", "80")),
    zh("闰年有多少天？", ("三百六十六", "366")),
    zh("太阳系里最大的行星是哪个？", ("木星",)),
    zh("离太阳最近的行星是哪个？", ("水星",)),
    zh("热的反义词是什么？", ("冷",)),
    zh("蓝色和黄色混在一起是什么颜色？", ("绿",)),
    zh("罗密欧与朱丽叶是谁写的？", ("莎士比亚",)),
    zh("一公斤等于多少克？", ("一千", "1000")),
    zh("一米等于多少厘米？", ("一百", "100")),
    zh("三角形有几条边？", ("三条", "3条", "三个边", "3个边"), ("四条", "4条")),
    zh("世界上最高的山是哪座？", ("珠穆朗玛", "珠峰")),
    zh("大熊猫最喜欢吃什么？", ("竹",)),
    zh("晴天的时候，天空是什么颜色的？", ("蓝",)),
    zh("地球上最大的海洋是哪个？", ("太平洋",)),
    zh("一年有几个季节？", ("四", "4", "春夏秋冬")),
)

QUESTIONS = ENGLISH + CHINESE
