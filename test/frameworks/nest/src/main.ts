import "reflect-metadata";
import { Module } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { AppModule } from "./app.module";
import { PlainController } from "./controllers";

/** The README's AppModule, and the check's routes that never use state beside it. */
@Module({ imports: [AppModule], controllers: [PlainController] })
class CheckedApp {}

async function bootstrap() {
  const app = await NestFactory.create(CheckedApp, { logger: ["error", "warn"] });
  await app.listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1");
}
void bootstrap();
