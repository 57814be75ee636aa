# ruff: noqa: RUF001 - the samples are text in other scripts.
"""How far the default token estimate is from a real tokenizer, per script.

Compares ``routed_llm.strategies.estimate_tokens`` (the default counter of
``InputSizeStrategy``) and the old four-characters-a-token rule with the
tokenizer of the model ``LlamaCppLlm`` runs by default, SmolLM2-135M, on
sample texts in several scripts. Needs the ``ondevice`` extra.

Run ``python benchmarks/token_estimate.py``; it prints the Markdown table
that ``docs/strategies.md`` shows.
"""

from __future__ import annotations

import math

from llama_cpp import Llama

from routed_llm.ondevice import default_model_path
from routed_llm.strategies import estimate_tokens

SAMPLES = {
    "English prose": (
        "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the "
        "steps out of habit rather than need. There were one hundred and twelve of them, "
        "worn smooth in the middle by a century of boots. At the top he wiped the salt from "
        "the great lens, trimmed the wick, and watched the beam swing out across the water. "
        "Ships he would never meet passed safely because of it. He liked that arrangement: a "
        "small, quiet kindness sent into the dark, with no thanks expected and none "
        "required. In winter the storms came in hard from the north, and the whole tower "
        "hummed like a struck bell, but the light never failed."
    ),
    "English technical": (
        "To configure the retry policy, set max_attempts to 3 and initial_backoff to 250 ms; "
        "the client doubles the delay after each failure (250, 500, 1000 ms) and adds up to "
        "20% jitter. Requests that fail with HTTP 429 or 503 are retried; 400, 401 and 404 "
        "are not. Call client.close() when done, or use it as a context manager: `with "
        "Client(timeout=30) as c: c.get('/v1/items?id=42')`. Version 2.4.1 fixed a race in "
        "the connection pool (issue #1187)."
    ),
    "French": (
        "Le vieux marché ouvre ses portes dès six heures du matin. Les maraîchers installent "
        "leurs étals de légumes, les fromagers découpent des meules de comté, et l'odeur du "
        "pain chaud se mêle à celle du café. On y croise des habitués qui discutent de la "
        "météo, des enfants qui réclament des croissants et des touristes qui photographient "
        "tout. À midi, tout est rangé, et la place retrouve son calme habituel."
    ),
    "German": (
        "Die Bibliothek der Stadt wurde im neunzehnten Jahrhundert gegründet und beherbergt "
        "heute mehr als zweihunderttausend Bücher. Besonders beliebt ist der Lesesaal mit "
        "seinen hohen Fenstern, durch die das Licht über die langen Holztische fällt. "
        "Studierende, Rentnerinnen und neugierige Schüler sitzen dort nebeneinander und "
        "vergessen über ihrer Lektüre die Zeit."
    ),
    "Spanish": (
        "Cada verano, el pueblo celebra sus fiestas con música, bailes y una gran comida al "
        "aire libre. Las calles se llenan de banderines de colores, y los vecinos sacan sus "
        "mesas a la plaza para compartir tortillas, empanadas y limonada. Los más pequeños "
        "corren entre las sillas mientras los abuelos cuentan historias de otros tiempos, "
        "cuando la fiesta duraba una semana entera."
    ),
    "Russian": (
        "Зимой в нашем городе рано темнеет, и уже к четырём часам на улицах зажигаются "
        "фонари. Люди спешат домой, кутаясь в шарфы, а из окон пахнет пирогами и горячим "
        "чаем. По выходным дети катаются с горки в парке, а взрослые гуляют по заснеженным "
        "аллеям и обсуждают планы на праздники. Несмотря на мороз, это моё любимое время "
        "года."
    ),
    "Ukrainian": (
        "Навесні в селі все оживає: у садах цвітуть вишні, на городах з'являються перші "
        "паростки, а лелеки повертаються до своїх гнізд. Бабуся щоранку виходить на ґанок із "
        "чашкою трав'яного чаю і слухає, як співають птахи."
    ),
    "Japanese": (
        "駅前の小さな喫茶店は、朝七時に開店します。店主は毎朝豆を挽き、丁寧にコーヒーを淹れま"
        "す。常連のお客さんは窓際の席に座り、新聞を読んだり、静かに外を眺めたりしています。昼"
        "になると近くの会社員が集まり、店内はにぎやかになります。夕方には学生たちが宿題をしに"
        "来て、閉店までゆっくり過ごしていきます。この店は町の人々にとって、なくてはならない場"
        "所なのです。"
    ),
    "Chinese": (
        "这座古老的城市坐落在河流的两岸，已有一千多年的历史。清晨，老人们在公园里打太极拳，年"
        "轻人骑着自行车赶去上班。街边的小吃摊飘出阵阵香味，包子、油条和豆浆是最受欢迎的早餐。"
        "到了晚上，河边的灯光亮起来，游客们坐船欣赏夜景，感受这座城市独特的魅力。"
    ),
    "Korean": (
        "우리 동네에는 작은 도서관이 하나 있습니다. 주말이 되면 아이들과 부모님들이 함께 "
        "와서 그림책을 읽고, 할머니 할아버지들은 신문을 보며 조용히 시간을 보냅니다. 도서관 "
        "앞마당에는 오래된 느티나무가 있어서 여름에는 시원한 그늘을 만들어 줍니다."
    ),
    "Greek": (
        "Το καλοκαίρι στο νησί οι μέρες είναι μεγάλες και ζεστές. Οι ψαράδες βγαίνουν νωρίς "
        "το πρωί, ενώ οι επισκέπτες κολυμπούν στα καθαρά νερά και τρώνε φρέσκο ψάρι στις "
        "ταβέρνες του λιμανιού."
    ),
    "Arabic": (
        "في الصباح الباكر تمتلئ الأسواق القديمة بالحركة، حيث يعرض التجار التوابل والأقمشة "
        "والفواكه الطازجة. ويتبادل الناس التحية ويتحدثون عن أخبار الحي بينما تنتشر رائحة "
        "القهوة في كل مكان."
    ),
    "Hindi": (
        "गाँव के बीच में एक पुराना बरगद का पेड़ है, जिसके नीचे शाम को लोग इकट्ठा होते हैं। "
        "बच्चे खेलते हैं, बुज़ुर्ग अपनी कहानियाँ सुनाते हैं और हवा में चाय की खुशबू फैल जाती "
        "है।"
    ),
    "Emoji": (
        "😀😃😄😁😆😅🤣😂🙂🙃😉😊😇🥰😍🤩😘😗😚😙🥲😋😛😜🤪😝🤑🤗🤭🤫🤔🤐🤨😐😑😶😏😒🙄😬🎉🎊"
        "🎈🎁🎂🍰🍕🍔🍟🌮🍣🍜🚀✈️🚗🚲⚽🏀🎾🏈👍👎👏🙌👋✌️🤞💪🙏❤️🧡💛💚💙💜🖤🤍🔥⭐🌈☀️🌙⚡❄️"
        "🌊👍🏽👋🏿👨\u200d👩\u200d👧\u200d👦🏳️\u200d🌈"
    ),
    "Mixed": (
        "Meeting notes 📝: 会議は午後3時に始まりました。Иван presented the Q3 numbers 📈 — "
        "revenue up 12%, costs down 4%. 次のステップ: finalize the budget by Friday 🎯. "
        "Спасибо всем! 🙏 Café près de la gare à 18h ☕? 好的，没问题！👍"
    ),
}


def main() -> None:
    tokenizer = Llama(model_path=str(default_model_path()), vocab_only=True, verbose=False)
    print("| text | characters | SmolLM2 tokens | estimate | off by | chars / 4 | off by |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, text in SAMPLES.items():
        real = len(tokenizer.tokenize(text.encode(), add_bos=False, special=False))
        estimate, quarter = estimate_tokens(text), math.ceil(len(text) / 4)
        print(
            f"| {name} | {len(text):,} | {real:,} | {estimate:,} | {estimate / real - 1:+.0%} "
            f"| {quarter:,} | {quarter / real - 1:+.0%} |"
        )


if __name__ == "__main__":
    main()
